"""The trading API (FastAPI): public market data, signed private endpoints, the WebSocket.

`create_app(config)` builds a stateless app whose lifespan opens the asyncpg pool, the Redis
client and the pub/sub hub and closes them; several instances may run side by side.
OpenAPI docs are at `/docs`. Every error is a JSON body
`{"error": code, "field": name-or-null, "reason": words}` with a 4xx status (5xx only when a
dependency is down); 429 answers carry `Retry-After`. Private endpoints need the signature
headers of api/signing.py; a user sees only their own orders, fills, balances and deposits
(another user's order id answers 404, as an unknown one does). `serve(args)` runs it
under uvicorn (`coffer api trading`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import Principal
from api.context import TradingConfig, TradingContext
from api.errors import ApiError, NotFoundError, RateLimitedError, ValidationError
from api.hub import EventHub
from api.markets import market_of, validate_order
from api.order_path import ORDER_COLUMNS, OrderPath
from api.views import FINAL_STATES, balance_view, deposit_view, fills_view, order_view

log = logging.getLogger("api.trading")
V1 = "/api/v1"


class OrderRequest(BaseModel):
    """The body of POST /api/v1/orders (documentation; the handler validates the raw JSON itself)."""

    market: str = Field(examples=["BTC-USDT"])
    side: Literal["buy", "sell"]
    type: Literal["limit", "market"] = "limit"
    price: str | None = Field(default=None, description="decimal string, a multiple of the tick (limit only)")
    quantity: str | None = Field(default=None, description="decimal string in base units, a multiple of the lot")
    quote_quantity: str | None = Field(default=None, description="market buys: quote amount to spend")
    time_in_force: Literal["GTC", "IOC", "FOK"] | None = None
    post_only: bool = False
    client_order_id: str | None = Field(default=None, max_length=36)
    stp: Literal["none", "cancel_taker", "cancel_maker", "cancel_both"] = "none"


def _is_unavailable(exc: BaseException) -> bool:
    import asyncpg
    import redis.exceptions

    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError,
                            asyncpg.exceptions.ConnectionDoesNotExistError,
                            asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.InterfaceError,
                            asyncpg.exceptions.PostgresConnectionError))


def _error_body(exc: ApiError) -> dict[str, Any]:
    return {"error": exc.code, "field": exc.field, "reason": exc.reason}


def _ctx(request: Request) -> TradingContext:
    ctx: TradingContext = request.app.state.ctx
    return ctx


def _path(request: Request) -> OrderPath:
    path: OrderPath = request.app.state.order_path
    return path


MAX_BODY_BYTES = 16 * 1024


async def authenticate(request: Request) -> Principal:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ValidationError(f"the body is larger than {MAX_BODY_BYTES} bytes", field="body")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ValidationError(f"the body is larger than {MAX_BODY_BYTES} bytes", field="body")
    auth = _ctx(request).authenticator()
    return await auth.authenticate(request.headers, request.method, request.url.path,
                                   request.url.query, body)


def create_app(config: TradingConfig) -> FastAPI:
    """The ASGI app; nothing is connected until the lifespan starts."""
    from ledger.intake_protocol import decode_reply, reply_channel

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = TradingContext(config)
        await ctx.open()
        hub = EventHub(config.redis_url, reply_channel(ctx.instance), decode_reply)
        try:
            await hub.start()
            app.state.ctx = ctx
            app.state.hub = hub
            app.state.order_path = OrderPath(pool=ctx.pool, redis=ctx.redis, hub=hub,
                                             reply_channel=reply_channel(ctx.instance),
                                             shards=config.intake_shards, wait_ms=config.order_wait_ms)
            yield
        finally:
            await hub.close()
            await ctx.close()

    app = FastAPI(title="Coffer trading API", version="1", lifespan=lifespan,
                  description="Spot trading: public market data, signed private endpoints (HMAC-SHA256), "
                              "WebSocket at /ws. Amounts and prices are decimal strings.")

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, RateLimitedError) else None
        return JSONResponse(_error_body(exc), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        field = ".".join(loc) or None
        reason = str(first.get("msg", "invalid request"))
        if first.get("type") == "missing":
            reason = "is required"
        return JSONResponse({"error": "invalid", "field": field, "reason": reason}, status_code=400)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # A dependency that is down is the client's to retry (503); anything else is ours (500),
        # logged here and never echoed (it could carry internals).
        if _is_unavailable(exc):
            log.warning("dependency unavailable: %s: %s", type(exc).__name__, exc)
            return JSONResponse({"error": "unavailable", "field": None,
                                 "reason": "a backing service (Redis or PostgreSQL) is unavailable; retry later"},
                                status_code=503, headers={"Retry-After": "1"})
        log.exception("unexpected error")
        return JSONResponse({"error": "internal", "field": None, "reason": "internal error"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse({"error": code, "field": None, "reason": str(exc.detail)}, status_code=exc.status_code)

    _public_routes(app)
    _private_routes(app)
    from api.ws import add_websocket

    add_websocket(app)
    return app


def _public_routes(app: FastAPI) -> None:
    @app.get(f"{V1}/time", tags=["public"])
    async def server_time() -> dict[str, int]:
        """Server time in Unix milliseconds (sign requests within the window of it)."""
        return {"server_ms": time.time_ns() // 1_000_000}

    @app.get(f"{V1}/markets", tags=["public"])
    async def markets(request: Request) -> list[dict[str, Any]]:
        """Every market with its tick, lot, minimum notional and fees."""
        return [m.public() for m in (await _ctx(request).markets()).values()]

    from api.market_data import add_market_data_routes

    add_market_data_routes(app)



def _private_routes(app: FastAPI) -> None:
    @app.post(f"{V1}/orders", tags=["private"], status_code=201,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": OrderRequest.model_json_schema()}}}},
              responses={202: {"description": "accepted, outcome not known yet (status pending)"},
                         400: {"description": "invalid field or rejected by the ledger"}})
    async def place_order(request: Request) -> JSONResponse:
        """Place an order; answers with its state (open, partially_filled, filled, ...) or 202 pending."""
        principal = await authenticate(request)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError(f"malformed JSON: {exc}", field="body") from None
        if body is None:
            raise ValidationError("a JSON object with the order is required", field="body")
        ctx = _ctx(request)
        markets = await ctx.markets()
        if isinstance(body, dict) and isinstance(body.get("market"), str) and body["market"].upper() not in markets:
            markets = await ctx.markets(refresh=True)
        intent = validate_order(body, markets)
        status, view = await _path(request).place(principal.user_id, intent, markets[intent.market])
        return JSONResponse(view, status_code=status)

    @app.delete(f"{V1}/orders/{{order_id}}", tags=["private"])
    async def cancel_order(request: Request, order_id: int) -> JSONResponse:
        """Cancel one of your orders; answers with its final state, or 202 while the cancel is in flight."""
        principal = await authenticate(request)
        markets = await _ctx(request).markets()
        status, view = await _path(request).cancel(principal.user_id, order_id, markets)
        return JSONResponse(view, status_code=status)

    @app.delete(f"{V1}/orders", tags=["private"])
    async def cancel_all(request: Request, market: str | None = None) -> JSONResponse:
        """Cancel all your live orders (in one market if given)."""
        principal = await authenticate(request)
        symbol = market_of(await _ctx(request).markets(), market).symbol if market is not None else None
        status, body = await _path(request).cancel_all(principal.user_id, symbol)
        return JSONResponse(body, status_code=status)

    @app.get(f"{V1}/orders/{{order_id}}", tags=["private"])
    async def get_order(request: Request, order_id: int) -> dict[str, Any]:
        """One of your orders."""
        principal = await authenticate(request)
        row = await _path(request).fetch_order(principal.user_id, order_id)
        if row is None:
            raise NotFoundError(f"no order {order_id} among your orders", field="order_id")
        return order_view(row, (await _ctx(request).markets())[row["market"]])

    @app.get(f"{V1}/orders", tags=["private"])
    async def list_orders(
        request: Request, market: str | None = None,
        status: Literal["open", "closed", "all"] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        client_order_id: Annotated[str | None, Query(max_length=36)] = None,
    ) -> list[dict[str, Any]]:
        """Your orders, newest first: open (pending, open), closed (filled, canceled, expired, rejected), all;
        `client_order_id` finds the order a 202 answer could not name yet."""
        principal = await authenticate(request)
        markets = await _ctx(request).markets()
        where = ["user_id = $1"]
        args: list[Any] = [principal.user_id]
        if client_order_id is not None:
            args.append(client_order_id)
            where.append(f"client_order_id = ${len(args)}")
        if market is not None:
            args.append(market_of(markets, market).symbol)
            where.append(f"market = ${len(args)}")
        if status != "all":
            args.append(list(FINAL_STATES))
            where.append(("state = ANY" if status == "closed" else "NOT state = ANY") + f"(${len(args)}::text[])")
        args.append(limit)
        rows = await _ctx(request).pool.fetch(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ${len(args)}",
            *args,
        )
        return [order_view(r, markets[r["market"]]) for r in rows]

    @app.get(f"{V1}/fills", tags=["private"])
    async def fills(request: Request, market: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Your fills, newest first; fees are in the asset you received."""
        principal = await authenticate(request)
        markets = await _ctx(request).markets()
        symbol = market_of(markets, market).symbol if market is not None else None
        rows = await _ctx(request).pool.fetch(
            """
            SELECT * FROM (
                SELECT * FROM trades WHERE buyer = $1 AND ($2::text IS NULL OR market = $2)
                UNION
                SELECT * FROM trades WHERE seller = $1 AND ($2::text IS NULL OR market = $2)
            ) t ORDER BY ts_ms DESC, seq DESC LIMIT $3
            """,
            principal.user_id, symbol, limit,
        )
        out: list[dict[str, Any]] = []
        for r in rows:
            out.extend(fills_view(r, principal.user_id, markets[r["market"]]))
        return out[:limit]

    @app.get(f"{V1}/balances", tags=["private"])
    async def balances(request: Request) -> list[dict[str, Any]]:
        """Your balances per asset: available, frozen (held by open orders and withdrawals), total."""
        principal = await authenticate(request)
        rows = await _ctx(request).pool.fetch(
            """
            SELECT b.asset, b.available, b.frozen, a.ledger_decimals
            FROM balances b JOIN assets a ON a.code = b.asset WHERE b.user_id = $1 ORDER BY b.asset
            """,
            principal.user_id,
        )
        return [balance_view(r, int(r["ledger_decimals"])) for r in rows]

    @app.get(f"{V1}/deposits", tags=["private"])
    async def deposits(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """Your credited (and reversed) deposits, newest first."""
        principal = await authenticate(request)
        rows = await _ctx(request).pool.fetch(
            """
            SELECT d.id, d.asset, d.amount, d.txid, d.output_index, d.state, d.credited_at, a.ledger_decimals
            FROM deposits d JOIN assets a ON a.code = d.asset WHERE d.user_id = $1 ORDER BY d.id DESC LIMIT $2
            """,
            principal.user_id, limit,
        )
        return [deposit_view(r, int(r["ledger_decimals"])) for r in rows]

    from api.deposit_address import add_deposit_address_route

    add_deposit_address_route(app, authenticate)
    try:
        from api.routes_withdrawals import router as withdrawals_router
    except ModuleNotFoundError as exc:  # the withdrawals router is contributed separately
        if exc.name != "api.routes_withdrawals":
            raise
    else:
        app.include_router(withdrawals_router)



def serve(args: argparse.Namespace) -> int:
    """`coffer api trading`: run under uvicorn on --host/--port (default from Settings)."""
    import uvicorn

    from coffer import event_loop
    from coffer.settings import Settings

    settings = Settings.from_env()
    config = TradingConfig.from_settings(settings)
    host = args.host or settings.host
    port = args.port or settings.trading_api_port
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(config), host=host, port=port, log_level=settings.log_level.lower(),
                access_log=False, ws="websockets-sansio", ws_max_size=64 * 1024, loop=event_loop.chosen())
    return 0
