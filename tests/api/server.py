"""Test helpers: run the trading API in-process under uvicorn on a free port, seed users.

`running_api(...)` starts the real app (lifespan, pools, pub/sub hub) with a real uvicorn
server inside the test's event loop and yields its base URL; `intake_consumers(...)` runs the
ledger's intake consumers in the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

from api.cli_users import create_user_with_key
from api.context import TradingConfig
from api.secretbox import load_master_key
from api.trading_app import create_app
from coffer.localservices import PostgresServer, free_port
from tests.harness import new_database


@pytest.fixture
def pipeline_db(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh migrated database for each test that runs the order pipeline. The Redis fixture is
    flushed per test, so a database shared by a module would keep settlement offsets (last
    applied engine seq per market) that the fresh engine's sequence numbers start below."""
    return new_database(pg_server, request.node.name[:40])


def config_for(db_url: str, redis_url: str, data_dir: Path, **over: Any) -> TradingConfig:
    base = TradingConfig(database_url=db_url, redis_url=redis_url, env="test", data_dir=data_dir,
                         intake_shards=2, rate_per_s=1000, window_ms=10_000, order_wait_ms=10_000,
                         ws_queue_max=100, ws_heartbeat_s=1)
    return replace(base, **over)


@contextlib.asynccontextmanager
async def running_api(config: TradingConfig) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", ws="websockets-sansio", access_log=False))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def new_user(db_url: str, data_dir: Path) -> tuple[int, str, str]:
    """A user with an API key (same master key file as the app's data_dir)."""
    return await create_user_with_key(db_url, load_master_key("test", data_dir))


async def seed_markets(db_url: str) -> None:
    from ledger.demo import seed_demo

    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract="0x" + "11" * 20)
    finally:
        await conn.close()


async def credit(db_url: str, user_id: int, asset: str, amount: int, key: str) -> None:
    from ledger.deposits import credit_deposit

    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await credit_deposit(conn, deposit_key=key, user_id=user_id, asset=asset, amount=amount,
                                 txid=key, output_index=0)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def intake_consumers(db_url: str, redis_url: str, shards: int) -> AsyncIterator[None]:
    import redis.asyncio as aioredis

    from ledger.intake import IntakeConsumer

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    red = aioredis.from_url(redis_url)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(IntakeConsumer(pool, red, shard=k, block_ms=50).run(stop)) for k in range(shards)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await red.aclose()
        await pool.close()


@contextlib.asynccontextmanager
async def order_pipeline(db_url: str, redis_url: str, shards: int,
                         markets: tuple[str, ...] = ("BTC-USDT", "ETH-USDT", "ETH-BTC")) -> AsyncIterator[None]:
    """The whole order path in this event loop: the ledger's intake consumers (one per shard),
    the matcher runners, the ledger's settlement consumers and the market-data consumers
    (one per market)."""
    import redis.asyncio as aioredis

    from ledger.intake import IntakeConsumer
    from ledger.settlement import SettlementConsumer
    from matcher.marketdata import MarketDataConfig
    from matcher.marketdata import run_markets as run_market_data
    from matcher.runner import RunnerConfig, run_markets

    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=shards + len(markets) + 2)
    red = aioredis.from_url(redis_url)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(IntakeConsumer(pool, red, shard=k, block_ms=20).run(stop)) for k in range(shards)]
    tasks += [asyncio.create_task(SettlementConsumer(pool, red, market=m, block_ms=20).run(stop)) for m in markets]
    tasks.append(asyncio.create_task(run_markets(RunnerConfig(markets, redis_url, block_ms=20), stop)))
    tasks.append(asyncio.create_task(run_market_data(MarketDataConfig(markets, redis_url, db_url, block_ms=20), stop)))
    try:
        yield
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        await red.aclose()
        await pool.close()
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors


async def balances_of(db_url: str, user_id: int) -> dict[str, tuple[int, int]]:
    """`{asset: (available, frozen)}` in ledger units, straight from PostgreSQL."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT asset, available, frozen FROM balances WHERE user_id = $1", user_id)
        return {r["asset"]: (int(r["available"]), int(r["frozen"])) for r in rows}
    finally:
        await conn.close()
