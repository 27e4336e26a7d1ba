"""Public market data for REST and WebSocket: depth, recent trades, K-lines.

The data is the matcher's (matcher/marketdata.py; key names and payloads in matcher/keys.py):
the depth snapshot hash `md:depth{M}`, the recent-trades sorted set `md:trades{M}`, live candles
in the hashes `md:kline:<I>{M}`, closed candles in the PostgreSQL `klines` table, and the pub/sub
channels `md:depth:chan{M}`, `md:trades:chan{M}`, `md:kline:chan{M}`. All of it is in engine
units; this module turns it into decimal strings with the market's tick and lot.

WebSocket channel names: `depth:<market>` (first a snapshot `{"snapshot": true, "update_id",
"bids", "asks"}`, then diffs `{"U", "u", "bids", "asks"}`: drop those with u <= update_id, apply
when U <= last_u + 1 <= u; a level with quantity "0" is gone), `trades:<market>`, `kline:<interval>:<market>`
with interval one of 1m 5m 15m 1h 4h 1d 1w.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

from api.errors import ValidationError
from api.markets import MarketInfo, market_of

INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w")
Formatter = Callable[[bytes], Any]


def parse_public_channel(channel: str, markets: Mapping[str, MarketInfo]) -> tuple[str, MarketInfo, str | None]:
    """`(kind, market, interval)` of a public channel name, or ValidationError."""
    parts = channel.split(":")
    if len(parts) == 2 and parts[0] in ("depth", "trades"):
        return parts[0], market_of(markets, parts[1], field="channel"), None
    if len(parts) == 3 and parts[0] == "kline":
        if parts[1] not in INTERVALS:
            raise ValidationError(f"interval must be one of {', '.join(INTERVALS)}", field="channel")
        return "kline", market_of(markets, parts[2], field="channel"), parts[1]
    raise ValidationError(
        "channel must be depth:<market>, trades:<market>, kline:<interval>:<market>, orders or balances",
        field="channel",
    )


def levels_view(levels: list[list[int]], m: MarketInfo) -> list[list[str]]:
    return [[m.price_str(int(p)), m.qty_str(int(q))] for p, q in levels]


def trade_view(t: Mapping[str, Any], m: MarketInfo) -> dict[str, Any]:
    price, qty = int(t["price"]), int(t["qty"])
    return {"id": int(t["seq"]), "price": m.price_str(price), "quantity": m.qty_str(qty),
            "quote_quantity": m.quote_str(price * qty * m.quote_units_per_tick_lot),
            "taker_side": t["taker_side"], "time_ms": int(t["ts_ms"])}


def kline_row(k: list[int], m: MarketInfo) -> list[Any]:
    """`[open_time_ms, open, high, low, close, volume, quote_volume]` from the matcher's candle list."""
    return [int(k[0]), m.price_str(int(k[1])), m.price_str(int(k[2])), m.price_str(int(k[3])),
            m.price_str(int(k[4])), m.qty_str(int(k[5])), m.quote_str(int(k[6]) * m.quote_units_per_tick_lot)]


async def depth_snapshot(redis: Any, m: MarketInfo, limit: int) -> dict[str, Any]:
    """`{"market", "update_id", "bids", "asks"}` from the matcher's depth hash (empty book if none)."""
    from matcher import keys

    raw = await redis.hgetall(keys.md_depth(m.symbol))
    bids = json.loads(raw[b"bids"]) if raw else []
    asks = json.loads(raw[b"asks"]) if raw else []
    return {"market": m.symbol, "update_id": int(raw[b"u"]) if raw else 0,
            "bids": levels_view(bids[:limit], m), "asks": levels_view(asks[:limit], m)}


def resolve_channel(channel: str, markets: Mapping[str, MarketInfo]) -> tuple[str, Formatter]:
    """The Redis pub/sub channel behind a public WebSocket channel and a formatter of its messages
    (the formatter returns None for a message that is not for this channel)."""
    from matcher import keys

    kind, m, interval = parse_public_channel(channel, markets)
    if kind == "depth":
        def depth(data: bytes) -> Any:
            d = json.loads(data)
            return {"U": d["U"], "u": d["u"], "bids": levels_view(d["bids"], m), "asks": levels_view(d["asks"], m)}
        return keys.md_depth_channel(m.symbol), depth
    if kind == "trades":
        def trades(data: bytes) -> Any:
            return [trade_view(t, m) for t in json.loads(data)]
        return keys.md_trades_channel(m.symbol), trades

    def kline(data: bytes) -> Any:
        d = json.loads(data)
        return kline_row(d["k"], m) if d.get("interval") == interval else None
    return keys.md_kline_channel(m.symbol), kline


def add_market_data_routes(app: FastAPI) -> None:
    from matcher import keys

    async def market_for(request: Request, symbol: str | None) -> MarketInfo:
        ctx = request.app.state.ctx
        markets = await ctx.markets()
        if isinstance(symbol, str) and symbol.upper() not in markets:
            markets = await ctx.markets(refresh=True)
        return market_of(markets, symbol)

    @app.get("/api/v1/depth", tags=["public"])
    async def depth(request: Request, market: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=50)] = 20) -> dict[str, Any]:
        """Order book snapshot: best `limit` levels per side as [price, quantity]; `update_id` orders it
        against the WebSocket diffs."""
        m = await market_for(request, market)
        return await depth_snapshot(request.app.state.ctx.redis, m, limit)

    @app.get("/api/v1/trades", tags=["public"])
    async def trades(request: Request, market: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
        """Recent public trades, newest first (self-trades are not public)."""
        m = await market_for(request, market)
        members = await request.app.state.ctx.redis.zrevrange(keys.md_trades(m.symbol), 0, limit - 1)
        return [trade_view(json.loads(x), m) for x in members]

    @app.get("/api/v1/klines", tags=["public"])
    async def klines(request: Request, market: str | None = None, interval: str | None = None,
                     start: Annotated[int | None, Query(ge=0, description="open time >= start (ms)")] = None,
                     end: Annotated[int | None, Query(ge=0, description="open time <= end (ms)")] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> list[list[Any]]:
        """Candles `[open_time_ms, open, high, low, close, volume, quote_volume]`, oldest first; buckets
        aligned to UTC, weeks start Monday. Without `start`, the most recent `limit`."""
        m = await market_for(request, market)
        if interval not in INTERVALS:
            raise ValidationError(f"must be one of {', '.join(INTERVALS)}", field="interval")
        if start is not None and end is not None and end < start:
            raise ValidationError("must not be before start", field="end")
        lo, hi = start if start is not None else 0, end if end is not None else 2**62
        ctx = request.app.state.ctx
        order = "ASC" if start is not None else "DESC"
        rows = await ctx.pool.fetch(
            "SELECT bucket_start_ms, open_ticks, high_ticks, low_ticks, close_ticks, volume_lots, quote_volume "
            "FROM klines WHERE market = $1 AND interval = $2 AND bucket_start_ms BETWEEN $3 AND $4 "
            f"ORDER BY bucket_start_ms {order} LIMIT $5",
            m.symbol, interval, lo, hi, limit,
        )
        candles: dict[int, list[int]] = {int(r[0]): [int(v) for v in r] for r in rows}
        live = await ctx.redis.hgetall(keys.md_kline(m.symbol, interval))
        for field, value in live.items():  # the live (and recent) buckets win over the table
            start_ms = int(field)
            if lo <= start_ms <= hi:
                candles[start_ms] = [int(v) for v in json.loads(value)]
        ordered = sorted(candles)
        chosen = ordered[:limit] if start is not None else ordered[-limit:]
        return [kline_row(candles[s], m) for s in chosen]
