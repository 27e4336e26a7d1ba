"""Internal deposit-address API (`coffer api deposits`), used by the exchange backend.

    POST /v1/deposit-addresses            {"user_id": 7, "asset": "BTC", "new": false}
         -> 201 {address, asset, chain, network, derivation_path, index, user_id} when created,
            200 with the same body when the user already has a current address
    GET  /v1/deposit-addresses?user_id=7  -> 200 {"user_id": 7, "addresses": [...]}
    GET  /v1/deposit-addresses/{address}  -> 200 owner record, 404 when it is not ours

Every request needs `Authorization: Bearer <COFFER_SERVICE_TOKEN>` (compared with
hmac.compare_digest; no token configured = every request refused) else 401. Bad input,
unknown assets and users that are not in the ledger's `users` table give 422 with a body
`{"error": code, "field": field-or-null, "reason": words}`. Addresses come from account
xpubs only (wallet config: the file named by COFFER_WALLET_CONFIG, else
<COFFER_DATA_DIR>/wallet.json; format in wallet/config.py); this host never holds a private
key. The asyncpg pool lives in the app's lifespan. OpenAPI docs at /docs.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from coffer.settings import Secret
from wallet.config import WalletConfig
from wallet.errors import UnknownAssetError, UnknownUserError

if TYPE_CHECKING:
    import asyncpg

    from wallet.registry import DepositAddress

log = logging.getLogger("coffer.api.deposits")

PATH = "/v1/deposit-addresses"
MAX_USER_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class DepositApiConfig:
    database_url: str = field(repr=False)
    service_token: Secret
    wallet: WalletConfig
    pool_max_size: int = 20


class _Problem(Exception):
    def __init__(self, status: int, code: str, reason: str, field_name: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason
        self.field_name = field_name


def _problem_response(exc: _Problem) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(
        {"error": exc.code, "field": exc.field_name, "reason": exc.reason}, status_code=exc.status, headers=headers
    )


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: StrictInt = Field(gt=0, le=MAX_USER_ID)
    asset: StrictStr = Field(min_length=1, max_length=32)
    new: StrictBool = False


def _validation_problem(exc: ValidationError) -> _Problem:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        msg = "unknown field (allowed: user_id, asset, new)"
    return _Problem(422, "invalid_request", f"{loc}: {msg}" if loc else msg, loc)


def _check_token(request: Request, expected: Secret) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _Problem(401, "unauthorized", "missing bearer service token (Authorization: Bearer <token>)")
    if not expected:
        raise _Problem(401, "unauthorized", "the server has no service token configured (COFFER_SERVICE_TOKEN)")
    if not hmac.compare_digest(token.strip().encode(), expected.get().encode()):
        raise _Problem(401, "unauthorized", "invalid service token")


def _view(
    record: DepositAddress, wallet: WalletConfig, *, owner: bool = False, created_view: bool = False
) -> dict[str, Any]:
    """JSON body of one address; the POST answer (`created_view`) has exactly the documented fields."""
    body: dict[str, Any] = {
        "address": record.address,
        "asset": record.asset,
        "chain": record.chain,
        "network": record.network,
        "derivation_path": record.derivation_path,
        "index": record.index,
        "user_id": record.user_id,
    }
    if owner or not record.is_current:
        body["is_current"] = record.is_current
    if owner or not created_view:
        # ETH and its tokens share addresses: name every asset the address receives.
        shared = wallet.assets_of_account(record.account) if record.account is not None else []
        body["assets"] = shared or [record.asset]
    return body


def _parse_user_id(raw: str | None) -> int:
    if raw is None or raw == "":
        raise _Problem(422, "invalid_request", "user_id: query parameter is required", "user_id")
    try:
        value = int(raw)
    except ValueError:
        raise _Problem(422, "invalid_request", f"user_id: {raw!r} is not an integer", "user_id") from None
    if not 0 < value <= MAX_USER_ID:
        raise _Problem(422, "invalid_request", "user_id: must be a positive 64-bit integer", "user_id")
    return value


async def _check_ledger_assets(pool: asyncpg.Pool, wallet: WalletConfig) -> None:
    """Refuse to start when configured assets contradict the ledger's `assets` table."""
    from wallet.config import ledger_mismatches
    from wallet.errors import ConfigError

    rows = await pool.fetch("SELECT code, chain, network, token_contract FROM assets")
    errors, warnings = ledger_mismatches(wallet, rows)
    for warning in warnings:
        log.warning("%s", warning)
    if errors:
        raise ConfigError("; ".join(errors))


def create_app(config: DepositApiConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import asyncpg

        pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=config.pool_max_size)
        try:
            await _check_ledger_assets(pool, config.wallet)
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Coffer deposit-address API", version="1", lifespan=lifespan, redoc_url=None)

    @app.exception_handler(_Problem)
    async def problem_handler(request: Request, exc: _Problem) -> JSONResponse:
        return _problem_response(exc)

    def pool_of(request: Request) -> asyncpg.Pool:
        return request.app.state.pool

    @app.post(PATH)
    async def create_address(request: Request) -> JSONResponse:
        from wallet import registry

        _check_token(request, config.service_token)
        try:
            payload = await request.json()
        except ValueError:
            raise _Problem(422, "invalid_request", "body must be a JSON object") from None
        try:
            body = CreateRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_problem(exc) from None
        try:
            asset = config.wallet.asset(body.asset)
        except UnknownAssetError as exc:
            raise _Problem(422, "unknown_asset", str(exc), "asset") from None
        try:
            async with pool_of(request).acquire() as conn, conn.transaction():
                record, created = await registry.allocate(
                    conn, asset, body.user_id, new=body.new, gap_limit=config.wallet.gap_limit
                )
        except UnknownUserError as exc:
            raise _Problem(422, "unknown_user", str(exc), "user_id") from None
        if created:
            log.info("deposit address allocated user=%s asset=%s index=%s", body.user_id, asset.code, record.index)
        return JSONResponse(_view(record, config.wallet, created_view=True), status_code=201 if created else 200)

    @app.get(PATH)
    async def list_addresses(request: Request) -> JSONResponse:
        from wallet import registry

        _check_token(request, config.service_token)
        user_id = _parse_user_id(request.query_params.get("user_id"))
        async with pool_of(request).acquire() as conn:
            if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id):
                raise _Problem(422, "unknown_user", f"user {user_id} does not exist", "user_id")
            records = await registry.list_for_user(conn, user_id)
        return JSONResponse({"user_id": user_id, "addresses": [_view(r, config.wallet) for r in records]})

    @app.get(PATH + "/{address}")
    async def owner_of(request: Request, address: str) -> JSONResponse:
        from wallet import registry

        _check_token(request, config.service_token)
        if not 1 <= len(address) <= 128:
            raise _Problem(422, "invalid_request", "address: must be 1..128 characters", "address")
        async with pool_of(request).acquire() as conn:
            record = await registry.find_owner(conn, address)
        if record is None:
            raise _Problem(404, "not_found", "address is not one of our deposit addresses", "address")
        return JSONResponse(_view(record, config.wallet, owner=True))

    return app


def serve(args: argparse.Namespace) -> int:
    """`coffer api deposits`: run under uvicorn on --host/--port (default from Settings)."""
    import uvicorn

    from coffer import event_loop
    from coffer.settings import Settings
    from wallet.config import ENV_VAR, load_config
    from wallet.errors import ConfigError

    settings = Settings.from_env()
    # COFFER_WALLET_CONFIG, else <COFFER_DATA_DIR>/wallet.json (where `coffer up` keeps its files).
    fallback = settings.data_dir / "wallet.json"
    wallet = load_config(None if os.environ.get(ENV_VAR) or not fallback.exists() else fallback)
    if not settings.database_url.get():
        raise ConfigError("COFFER_DATABASE_URL is not set: the deposit-address API needs the ledger database")
    if not settings.service_token:
        raise ConfigError("COFFER_SERVICE_TOKEN is not set: the deposit-address API refuses to run without one")
    config = DepositApiConfig(settings.database_url.get(), settings.service_token, wallet)
    host = args.host or settings.host
    port = args.port or settings.deposit_api_port
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=port, log_level=settings.log_level.lower(), access_log=False,
                loop=event_loop.chosen())
    return 0


__all__ = ["DepositApiConfig", "create_app", "serve"]
