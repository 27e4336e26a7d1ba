"""The order path as the API drives it: intake request out, ledger reply and engine outcome in.

`OrderPath.place` registers for the ledger's reply (request id on this instance's reply
channel) and for the user's event channel, XADDs a `PlaceOrderRequest` to `intake{shard}`
(ledger/intake_protocol.py), waits for the reply (`pending` = funds frozen and forwarded, or
`rejected` with a reason), then for the engine's outcome (the settlement consumer's `order`
event: open, filled, canceled, expired, rejected), and answers with the order as stored in
PostgreSQL. When the deadline (`order_wait_ms`) passes first it answers with what is known:
`pending`. Cancels and cancel-all travel the same stream, so one user's commands stay in
order. Pure of HTTP: results are `(http_status, json_body)`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from api.errors import ApiError, NotFoundError, UnavailableError, ValidationError
from api.hub import EventHub, Listener
from api.markets import MarketInfo, OrderIntent
from api.views import FINAL_STATES, order_view

ORDER_COLUMNS = (
    "id, user_id, market, client_order_id, side, type, tif, post_only, price_ticks, qty_lots, funds_notional, "
    "filled_lots, filled_quote, fee_paid, state, done_reason, ts_ms"
)


class RejectedError(ApiError):
    """The ledger refused the order (insufficient balance, duplicate, ...)."""

    status_code = 400
    code = "rejected"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class OrderPath:
    def __init__(self, *, pool: Any, redis: Any, hub: EventHub, reply_channel: str, shards: int,
                 wait_ms: int) -> None:
        self._pool = pool
        self._redis = redis
        self._hub = hub
        self._reply_channel = reply_channel
        self._shards = shards
        self._wait_s = wait_ms / 1000

    async def _send(self, user_id: int, request: Any) -> None:
        import redis.exceptions

        from ledger import intake_protocol as ip

        stream = ip.intake_stream(ip.shard_for_user(user_id, self._shards))
        try:
            await self._redis.xadd(stream, {ip.BATCH_FIELD: ip.encode_requests([request])})
        except (redis.exceptions.ConnectionError, OSError) as exc:
            raise UnavailableError("the order pipeline is unreachable; retry later") from exc

    @property
    def reply_channel(self) -> str:
        """This instance's reply channel (`reply_to` of every intake request it sends)."""
        return self._reply_channel

    @property
    def wait_s(self) -> float:
        return self._wait_s

    async def request_reply(self, user_id: int, request: Any, deadline: float) -> Any | None:
        """XADD `request` (an intake_protocol request naming `reply_channel`) to the user's intake
        shard and wait until `deadline` (monotonic) for the ledger's `Reply`; None if it did not come."""
        return await self._request(user_id, request, None, deadline)

    async def _request(self, user_id: int, request: Any, listener: Listener | None, deadline: float) -> Any | None:
        """Send and wait for the ledger's reply; None when the deadline passed first. Nothing is
        sent while the reply channel is not subscribed (the answer would be lost): 503."""
        if not await self._hub.wait_ready(min(1.0, max(0.0, deadline - time.monotonic()))):
            raise UnavailableError("the order pipeline's reply channel is reconnecting; retry shortly")
        fut = self._hub.expect_reply(request.rid)
        try:
            await self._send(user_id, request)
            return await asyncio.wait_for(fut, max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return None
        finally:
            self._hub.forget_reply(request.rid)

    async def fetch_order(self, user_id: int, order_id: int) -> Any:
        return await self._pool.fetchrow(
            f"SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1 AND user_id = $2", order_id, user_id
        )

    async def _await_outcome(self, user_id: int, order_id: int, listener: Listener, deadline: float,
                             want_final: bool) -> Any:
        """Wait for an order event that settles the order's state; then read the order row."""
        from ledger.intake_protocol import decode_user_events

        poll_s = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msg = await listener.get(min(remaining, poll_s))
            if msg is None:
                row = await self.fetch_order(user_id, order_id)  # pub/sub may have dropped it
                if row is not None and self._settled(row["state"], want_final):
                    return row
                poll_s = min(poll_s * 2, 0.4)
                continue
            try:
                payload = decode_user_events(msg[1])
            except Exception:  # noqa: S112 - malformed event: the DB read later decides
                continue
            for ev in payload.get("events", ()):
                if ev.get("type") == "order" and ev.get("order_id") == order_id and \
                        self._settled(str(ev.get("state")), want_final):
                    return await self.fetch_order(user_id, order_id)
        return await self.fetch_order(user_id, order_id)

    @staticmethod
    def _settled(state: str, want_final: bool) -> bool:
        return state in FINAL_STATES if want_final else state != "pending"

    async def place(self, user_id: int, intent: OrderIntent, market: MarketInfo) -> tuple[int, dict[str, Any]]:
        from ledger.intake_protocol import PlaceOrderRequest, user_events_channel

        deadline = time.monotonic() + self._wait_s
        request = PlaceOrderRequest(
            rid=secrets.token_hex(8), reply_to=self._reply_channel, user=user_id, market=intent.market,
            side=intent.side,  # type: ignore[arg-type]
            type=intent.type,  # type: ignore[arg-type]
            price=market.price_str(intent.price_ticks) if intent.price_ticks is not None else None,
            qty=market.qty_str(intent.qty_lots) if intent.qty_lots is not None else None,
            funds=(market.quote_str(intent.funds_notional * market.quote_units_per_tick_lot)
                   if intent.funds_notional is not None else None),
            ts_ms=_now_ms(), client_order_id=intent.client_order_id,
            tif=intent.tif,  # type: ignore[arg-type]
            post_only=intent.post_only,
            stp=intent.stp,  # type: ignore[arg-type]
        )
        async with self._hub.listening([user_events_channel(user_id)], maxsize=10_000) as listener:
            reply = await self._request(user_id, request, listener, deadline)
            if reply is None:
                return 202, {"id": None, "client_order_id": intent.client_order_id, "market": intent.market,
                             "status": "pending", "request_id": request.rid,
                             "detail": "the pipeline has not answered yet; look the order up later"}
            if not reply.ok or reply.state == "rejected":
                raise RejectedError(reply.reason or "the order was rejected")
            if reply.order_id is None:
                raise UnavailableError("the ledger answered without an order id")
            row = await self._await_outcome(user_id, reply.order_id, listener, deadline, want_final=False)
        if row is None:
            raise UnavailableError(f"order {reply.order_id} was accepted but cannot be read back")
        view = order_view(row, market)
        if reply.duplicate:
            view["duplicate"] = True
            return 200, view
        return (202 if view["status"] == "pending" else 201), view

    async def cancel(self, user_id: int, order_id: int, markets: dict[str, MarketInfo]) -> tuple[int, dict[str, Any]]:
        from ledger.intake_protocol import CancelRequest, user_events_channel

        row = await self.fetch_order(user_id, order_id)
        if row is None:
            raise NotFoundError(f"no order {order_id} among your orders", field="id")
        market = markets[row["market"]]
        if row["state"] in FINAL_STATES:
            raise ValidationError(f"order {order_id} is already {row['state']}", field="id")
        deadline = time.monotonic() + self._wait_s
        request = CancelRequest(rid=secrets.token_hex(8), reply_to=self._reply_channel, user=user_id,
                                market=row["market"], ts_ms=_now_ms(), order_id=order_id)
        async with self._hub.listening([user_events_channel(user_id)], maxsize=10_000) as listener:
            reply = await self._request(user_id, request, listener, deadline)
            if reply is not None and (not reply.ok or reply.state == "rejected"):
                raise RejectedError(reply.reason or "the cancel was rejected", field="id")
            row = await self._await_outcome(user_id, order_id, listener, deadline, want_final=True)
        view = order_view(row, market)
        return (200 if row["state"] in FINAL_STATES else 202), view

    async def cancel_all(self, user_id: int, market: str | None) -> tuple[int, dict[str, Any]]:
        from ledger.intake_protocol import CancelAllRequest, user_events_channel

        deadline = time.monotonic() + self._wait_s
        request = CancelAllRequest(rid=secrets.token_hex(8), reply_to=self._reply_channel, user=user_id,
                                   ts_ms=_now_ms(), market=market)
        async with self._hub.listening([user_events_channel(user_id)], maxsize=10_000) as listener:
            reply = await self._request(user_id, request, listener, deadline)
        if reply is None:
            return 202, {"status": "pending", "market": market, "request_id": request.rid}
        if not reply.ok or reply.state == "rejected":
            raise RejectedError(reply.reason or "the cancel was rejected")
        return 200, {"status": "cancel_pending", "market": market, "canceled": reply.canceled}
