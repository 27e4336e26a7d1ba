"""The WebSocket `/ws`: market-data subscriptions, a signed login for the user's own streams.

Client messages (JSON): `{"op": "subscribe", "channel": C}`, `{"op": "unsubscribe", "channel": C}`,
`{"op": "login", "key": KEY_ID, "ts": MS, "sig": HEX}` (the HMAC of api/signing.py over
`GET /ws` with empty query and body; same window and replay rules as REST), `{"op": "ping"}`.
Public channels: `depth:<market>` (a snapshot `{"snapshot": true, "update_id", "bids", "asks"}`
first, then diffs), `trades:<market>`, `kline:<interval>:<market>` (resolved to the matcher's
Redis channels by api/market_data.py). After login: `orders` (order state changes
and fills) and `balances` (new totals). Server messages: `{"type": "subscribed"|"unsubscribed",
"channel"}`, `{"type": "login", "user_id"}`, `{"type": "error", "reason"}`, `{"type": "ping", "ts"}`
every heartbeat, `{"type": "pong"}`, and data as `{"channel": C, "data": ...}`.
Every client has one bounded queue fed by the process's pub/sub hub without waiting; when it
is full the client is disconnected (close code 4008) instead of slowing anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from api.amounts import format_units
from api.errors import ApiError
from api.hub import EventHub, Listener
from api.markets import MarketInfo

log = logging.getLogger("api.ws")
CLOSE_TOO_SLOW = 4008
USER_CHANNELS = ("orders", "balances")
MAX_SUBSCRIPTIONS = 50


def user_event_view(ev: dict[str, Any], markets: dict[str, MarketInfo], decimals: dict[str, int]
                    ) -> tuple[str, dict[str, Any]] | None:
    """A ledger user event as `(ws_channel, data)` with decimal strings; None if unknown."""
    kind = ev.get("type")
    if kind == "balance":
        asset = str(ev.get("asset"))
        d = decimals.get(asset, 0)
        available, frozen = int(ev.get("available", 0)), int(ev.get("frozen", 0))
        return "balances", {"asset": asset, "available": format_units(available, d),
                            "frozen": format_units(frozen, d), "total": format_units(available + frozen, d)}
    market = markets.get(str(ev.get("market")))
    if market is None:
        return None
    if kind == "order":
        filled = int(ev.get("filled_lots", 0))
        state = str(ev.get("state"))
        return "orders", {"type": "order", "order_id": ev.get("order_id"), "market": market.symbol,
                          "status": "partially_filled" if state == "open" and filled > 0 else state,
                          "filled_quantity": market.qty_str(filled), "time_ms": ev.get("ts_ms")}
    if kind == "fill":
        fee_asset = str(ev.get("fee_asset"))
        return "orders", {
            "type": "fill", "order_id": ev.get("order_id"), "market": market.symbol, "side": ev.get("side"),
            "liquidity": ev.get("liquidity"), "trade_id": ev.get("seq"),
            "price": market.price_str(int(ev.get("price_ticks", 0))),
            "quantity": market.base_str(int(ev.get("base_amount", 0))),
            "quote_quantity": market.quote_str(int(ev.get("quote_amount", 0))),
            "fee": format_units(int(ev.get("fee", 0)), decimals.get(fee_asset, 0)), "fee_asset": fee_asset,
            "time_ms": ev.get("ts_ms"),
        }
    return None


class _Session:
    def __init__(self, ws: WebSocket, hub: EventHub, ctx: Any, queue_max: int) -> None:
        self.ws = ws
        self.hub = hub
        self.ctx = ctx
        self.listener = Listener(queue_max)
        self.public: dict[str, tuple[str, Any]] = {}  # ws channel -> (redis channel, formatter)
        self.redis_to_ws: dict[str, set[str]] = {}
        self.user_id: int | None = None
        self.user_subs: set[str] = set()
        self.send_lock = asyncio.Lock()

    async def send(self, obj: Any) -> None:
        async with self.send_lock:
            await self.ws.send_text(json.dumps(obj, separators=(",", ":")))

    async def _send_locked(self, obj: Any) -> None:
        """Send while the caller already holds `send_lock`."""
        await self.ws.send_text(json.dumps(obj, separators=(",", ":")))

    async def handle(self, raw: str) -> None:
        try:
            msg = json.loads(raw)
        except ValueError:
            await self.send({"type": "error", "reason": "malformed JSON"})
            return
        if not isinstance(msg, dict):
            await self.send({"type": "error", "reason": "a message must be a JSON object with an op"})
            return
        op = msg.get("op")
        try:
            if op == "ping":
                await self.send({"type": "pong", "ts": time.time_ns() // 1_000_000})
            elif op == "login":
                await self.login(msg)
            elif op == "subscribe":
                await self.subscribe(str(msg.get("channel", "")))
            elif op == "unsubscribe":
                await self.unsubscribe(str(msg.get("channel", "")))
            else:
                await self.send({"type": "error", "reason": "op must be subscribe, unsubscribe, login or ping"})
        except ApiError as exc:
            await self.send({"type": "error", "op": op, "reason": exc.reason, "field": exc.field})

    async def login(self, msg: dict[str, Any]) -> None:
        from ledger.intake_protocol import user_events_channel

        if self.user_id is not None:
            await self.send({"type": "error", "reason": "already logged in"})
            return
        ts = msg.get("ts")
        principal = await self.ctx.authenticator().verify(
            str(msg.get("key") or ""), str(ts) if ts is not None else None, str(msg.get("sig") or ""),
            "GET", "/ws", "", b"")
        self.user_id = principal.user_id
        await self.hub.add(self.listener, user_events_channel(principal.user_id))
        await self.send({"type": "login", "user_id": principal.user_id})

    async def subscribe(self, channel: str) -> None:
        if channel in USER_CHANNELS:
            if self.user_id is None:
                await self.send({"type": "error", "channel": channel, "reason": "log in first (op login)"})
                return
            self.user_subs.add(channel)
        else:
            if channel in self.public:
                await self.send({"type": "subscribed", "channel": channel})
                return
            if len(self.public) >= MAX_SUBSCRIPTIONS:
                await self.send({"type": "error", "channel": channel,
                                 "reason": f"at most {MAX_SUBSCRIPTIONS} subscriptions"})
                return
            from api.market_data import resolve_channel

            redis_channel, formatter = resolve_channel(channel, await self.ctx.markets())
            self.public[channel] = (redis_channel, formatter)
            self.redis_to_ws.setdefault(redis_channel, set()).add(channel)
            await self.hub.add(self.listener, redis_channel)
            if channel.startswith("depth:"):
                await self.send({"type": "subscribed", "channel": channel})
                await self.send_depth_snapshot(channel)
                return
        await self.send({"type": "subscribed", "channel": channel})

    async def send_depth_snapshot(self, channel: str) -> None:
        """The book's snapshot right after a depth subscription. It is read after subscribing and
        sent while holding the send lock, so every diff that reaches the client after it has a
        `u` above the snapshot's or is covered by it (the client drops those with u <= update_id)."""
        from api.market_data import depth_snapshot

        market = channel.split(":", 1)[1]
        markets = await self.ctx.markets()
        async with self.send_lock:
            snapshot = await depth_snapshot(self.ctx.redis, markets[market.upper()], 50)
            await self._send_locked({"channel": channel, "data": {"snapshot": True, **snapshot}})

    async def unsubscribe(self, channel: str) -> None:
        if channel in USER_CHANNELS:
            self.user_subs.discard(channel)
        elif channel in self.public:
            redis_channel, _ = self.public.pop(channel)
            users = self.redis_to_ws.get(redis_channel, set())
            users.discard(channel)
            if not users:
                self.redis_to_ws.pop(redis_channel, None)
                await self.hub.remove(self.listener, redis_channel)
        await self.send({"type": "unsubscribed", "channel": channel})

    async def pump(self) -> None:
        """Forward hub messages to the client until the queue overflows."""
        from ledger.intake_protocol import decode_user_events

        while True:
            item = await self.listener.get(0.5)
            if self.listener.overflowed:
                return
            if item is None:
                continue
            redis_channel, data = item
            ws_channels = self.redis_to_ws.get(redis_channel)
            if ws_channels:
                for ws_channel in sorted(ws_channels):
                    _, formatter = self.public[ws_channel]
                    view = formatter(data)
                    if view is not None:
                        await self.send({"channel": ws_channel, "data": view})
                continue
            if self.user_id is None or not self.user_subs:
                continue
            try:
                payload = decode_user_events(data)
            except Exception:  # noqa: S112 - a malformed event is skipped, not fatal
                continue
            markets = await self.ctx.markets()
            decimals = await self.ctx.asset_decimals()
            for ev in payload.get("events", ()):
                view = user_event_view(ev, markets, decimals)
                if view is not None and view[0] in self.user_subs:
                    await self.send({"channel": view[0], "data": view[1]})

    async def heartbeat(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.send({"type": "ping", "ts": time.time_ns() // 1_000_000})


def add_websocket(app: FastAPI) -> None:
    @app.websocket("/ws")
    async def websocket(ws: WebSocket) -> None:
        await ws.accept()
        ctx = ws.app.state.ctx
        session = _Session(ws, ws.app.state.hub, ctx, ctx.config.ws_queue_max)
        tasks = [asyncio.create_task(session.pump()), asyncio.create_task(session.heartbeat(ctx.config.ws_heartbeat_s))]
        receiver = asyncio.create_task(_receive(ws, session))
        overflow = asyncio.create_task(session.listener.overflow_event.wait())
        everything = [*tasks, receiver, overflow]
        try:
            await asyncio.wait(everything, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The pump may be stuck in a send to a client that does not read: cancel it first.
            for task in everything:
                task.cancel()
            for task in everything:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, Exception):
                    await task
            await session.hub.remove_all(session.listener)
        if session.listener.overflowed:
            log.info("dropping a slow WebSocket client (queue of %d full)", ctx.config.ws_queue_max)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(code=CLOSE_TOO_SLOW, reason="too slow: message queue full"), 1.0)


async def _receive(ws: WebSocket, session: _Session) -> None:
    while True:
        try:
            raw = await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        await session.handle(raw)
