"""The trading API's configuration and per-process context (pools, clients, caches).

`TradingConfig` is built once in the entry point from `Settings` and the API's own
environment variables:

- `COFFER_API_RATE_PER_S`          signed requests per second per key (default 50)
- `COFFER_API_WINDOW_MS`           accepted clock skew of a signature, either side (default 10000)
- `COFFER_API_ORDER_WAIT_MS`       how long `POST /orders` waits for the pipeline's answer before
                                   answering 202 `pending` (default 2000)
- `COFFER_API_WS_QUEUE`            messages buffered per WebSocket client before it is dropped
                                   (default 1000)
- `COFFER_API_WS_HEARTBEAT_S`      seconds between server pings on a WebSocket (default 15)
- `COFFER_WALLET_CONFIG`           the wallet's deposit-address config (xpubs); without it
                                   `GET /deposit-address` answers 503

`TradingContext` holds what the lifespan creates (asyncpg pool, Redis client, key cache,
authenticator, market cache) and closes it again. The app is stateless between requests;
several instances may run side by side.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from api.auth import Authenticator
from api.errors import UnavailableError
from api.keystore import KeyCache
from api.markets import MarketInfo, load_markets
from api.secretbox import load_master_key
from coffer.settings import Settings

if TYPE_CHECKING:
    from wallet.config import WalletConfig


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    from coffer.errors import SettingsError

    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class TradingConfig:
    database_url: str
    redis_url: str
    env: str
    data_dir: Path
    intake_shards: int
    rate_per_s: int = 50
    window_ms: int = 10_000
    order_wait_ms: int = 2_000
    ws_queue_max: int = 1_000
    ws_heartbeat_s: int = 15
    instance: str = ""
    wallet: WalletConfig | None = None

    def __repr__(self) -> str:
        from coffer.settings import mask_url

        return (f"TradingConfig(database_url={mask_url(self.database_url)!r}, redis_url={mask_url(self.redis_url)!r}, "
                f"env={self.env!r}, instance={self.instance!r})")

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> TradingConfig:
        from coffer.errors import SettingsError

        env = os.environ if environ is None else environ
        wallet = None
        if env.get("COFFER_WALLET_CONFIG"):
            from wallet.config import load_config

            wallet = load_config(environ=env)
        if not settings.database_url.get() or not settings.redis_url.get():
            raise SettingsError("the trading API needs COFFER_DATABASE_URL and COFFER_REDIS_URL")
        return cls(
            database_url=settings.database_url.get(), redis_url=settings.redis_url.get(), env=settings.env,
            data_dir=settings.data_dir, intake_shards=settings.intake_shards,
            rate_per_s=_env_int(env, "COFFER_API_RATE_PER_S", 50),
            window_ms=_env_int(env, "COFFER_API_WINDOW_MS", 10_000),
            order_wait_ms=_env_int(env, "COFFER_API_ORDER_WAIT_MS", 2_000),
            ws_queue_max=_env_int(env, "COFFER_API_WS_QUEUE", 1_000),
            ws_heartbeat_s=_env_int(env, "COFFER_API_WS_HEARTBEAT_S", 15),
            wallet=wallet,
        )


class TradingContext:
    """Pools and caches of one API process; `open()` in the lifespan, `close()` after."""

    MARKETS_TTL_S = 10.0

    def __init__(self, config: TradingConfig) -> None:
        self.config = config
        self.instance = config.instance or secrets.token_hex(6)
        self.pool: Any = None
        self.redis: Any = None
        self.auth: Authenticator | None = None
        self._markets: dict[str, MarketInfo] = {}
        self._markets_at = 0.0
        self._decimals: dict[str, int] = {}
        self._decimals_at = 0.0

    async def open(self) -> None:
        import asyncpg
        import redis.asyncio as aioredis

        from coffer.pgpool import keep_session

        master = load_master_key(self.config.env, self.config.data_dir)
        self.pool = await asyncpg.create_pool(self.config.database_url, min_size=1, max_size=10, reset=keep_session)
        self.redis = aioredis.from_url(self.config.redis_url)
        self.auth = Authenticator(KeyCache(self.pool, master), self.redis, window_ms=self.config.window_ms,
                                  rate_per_s=self.config.rate_per_s)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def authenticator(self) -> Authenticator:
        if self.auth is None:
            raise UnavailableError("the API is starting")
        return self.auth

    async def markets(self, *, refresh: bool = False) -> dict[str, MarketInfo]:
        """Markets from PostgreSQL, cached for MARKETS_TTL_S."""
        now = time.monotonic()
        if refresh or not self._markets or now - self._markets_at > self.MARKETS_TTL_S:
            self._markets = await load_markets(self.pool)
            self._markets_at = now
        return self._markets

    async def asset_decimals(self) -> dict[str, int]:
        """Ledger decimals per asset code, cached like the markets."""
        now = time.monotonic()
        if not self._decimals or now - self._decimals_at > self.MARKETS_TTL_S:
            rows = await self.pool.fetch("SELECT code, ledger_decimals FROM assets")
            self._decimals = {r["code"]: int(r["ledger_decimals"]) for r in rows}
            self._decimals_at = now
        return self._decimals
