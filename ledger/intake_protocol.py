"""The intake contract between the API and the ledger: requests in, replies and user events out.

Requests. The trading API writes each user's commands to the stream `intake{k}` with
`k = shard_for_user(user_id, shards)` (shards = COFFER_INTAKE_SHARDS), so one user's
commands stay in order. An entry carries the field `b`: a msgpack list of request maps
(a batch; one request per entry is fine). `encode_requests` / `decode_requests` build and
read them. Amounts travel as decimal STRINGS exactly as the client sent them: the ledger
validates them against the market's tick, lot and minimum notional (`ledger.markets`), so
the API may pre-check with the same functions but need not. `ts_ms` is the API's receipt
time; the engine never reads a clock.

Replies. Every request names `reply_to`, a Redis pub/sub channel of the API instance that
waits for it (by convention `reply_channel(instance_id)` = `intake:reply:<instance_id>`;
empty = no reply wanted). After the ledger COMMITS the batch it PUBLISHes one msgpack map
per request on that channel (`Reply`): `rid` (the request id the API chose), `ok`, `kind`,
`order_id`, `client_order_id`, `state` (`pending` = frozen and forwarded to the engine;
`rejected`), `reason` (why it was rejected, in words a client can act on), and for a
withdrawal `withdrawal_id`. A duplicate `client_order_id` is answered with the ORIGINAL
order's id and current state and `duplicate=True`. Pub/sub is at-most-once: an API that
missed its reply answers 202 `pending` and the client reads the order later. A request the
ledger cannot decode is skipped with a log line (it cannot be answered).

User events. After each committed settlement batch the ledger publishes on
`user_events_channel(user_id)` = `user:events:<user_id>` one msgpack map
`{"user": id, "events": [...]}` per user touched, events in order:
  {"type": "fill", "market", "order_id", "side", "liquidity" ("maker"|"taker"), "seq",
   "price_ticks", "qty_lots", "base_amount", "quote_amount", "fee", "fee_asset", "ts_ms"}
  {"type": "order", "market", "order_id", "state", "filled_lots", "ts_ms"}
  {"type": "balance", "asset", "available", "frozen"}   (new totals, ledger units)
The intake consumer publishes `balance` events too (after a freeze or a withdrawal hold);
the order's `pending`/`rejected` outcome travels in the reply only.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgpack
import msgspec

from ledger.errors import IntakeProtocolError

BATCH_FIELD = b"b"


def intake_stream(shard: int) -> str:
    return f"intake{{{shard}}}"


def shard_for_user(user_id: int, shards: int) -> int:
    """The intake shard of a user: `user_id mod shards` (stable, no hashing of strings)."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    return user_id % shards


def reply_channel(instance_id: str) -> str:
    return f"intake:reply:{instance_id}"


def user_events_channel(user_id: int) -> str:
    return f"user:events:{user_id}"


# The request types are msgspec Structs: `decode_requests` decodes a batch straight into them
# (several times faster than msgpack + a dataclass per item) and checks every field's type on
# the way, so a wrongly typed field is an IntakeProtocolError, never a value the ledger trips
# over later. The wire stays a msgpack map per request with the tag `t`. `side`, `type`, `tif`
# and `stp` are plain strings on the wire: the ledger rejects a value outside their set with a
# reason the client sees (the engine does so for `stp`), so they are not checked here.
# `gc=False`: the fields are scalars, a request can never be part of a reference cycle.
class PlaceOrderRequest(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                        tag="place"):
    """Place an order. Limit: `price` and `qty`. Market sell: `qty`. Market buy: `funds`
    (quote amount). Decimal strings in human units (e.g. price '30000.5' USDT per BTC)."""

    rid: str
    reply_to: str
    user: int
    market: str
    side: str  # buy | sell
    type: str  # limit | market
    price: str | None
    qty: str | None
    funds: str | None
    ts_ms: int
    client_order_id: str | None = None
    tif: str = "GTC"  # GTC | IOC | FOK
    post_only: bool = False
    stp: str = "none"  # none | cancel_taker | cancel_maker | cancel_both
    t: ClassVar[Literal["place"]] = "place"


class CancelRequest(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                    tag="cancel"):
    """Cancel one order, by `order_id` or by `client_order_id`."""

    rid: str
    reply_to: str
    user: int
    market: str
    ts_ms: int
    order_id: int | None = None
    client_order_id: str | None = None
    t: ClassVar[Literal["cancel"]] = "cancel"


class CancelAllRequest(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                       tag="cancel_all"):
    """Cancel every live order of the user (in one market, or all when `market` is None)."""

    rid: str
    reply_to: str
    user: int
    ts_ms: int
    market: str | None = None
    t: ClassVar[Literal["cancel_all"]] = "cancel_all"


class WithdrawRequest(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                      tag="withdraw"):
    """Hold `amount` (decimal string, asset units, fee included) for a withdrawal to `address`."""

    rid: str
    reply_to: str
    user: int
    asset: str
    amount: str
    address: str
    ts_ms: int
    t: ClassVar[Literal["withdraw"]] = "withdraw"


Request = PlaceOrderRequest | CancelRequest | CancelAllRequest | WithdrawRequest
_BATCH = msgspec.msgpack.Decoder(list[Request])
_ITEM = msgspec.msgpack.Decoder(Request)
_RAW_ITEMS = msgspec.msgpack.Decoder(list[msgspec.Raw])
_ENCODER = msgspec.msgpack.Encoder()


class Reply(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    rid: str
    ok: bool
    kind: str
    state: str  # pending | rejected | cancel_pending | held
    order_id: int | None = None
    client_order_id: str | None = None
    reason: str = ""
    duplicate: bool = False
    withdrawal_id: int | None = None
    canceled: int = 0  # cancel_all: how many cancels were forwarded


_REPLY = msgspec.msgpack.Decoder(Reply)

def encode_requests(items: list[Request]) -> bytes:
    """The value of field `b` of one `intake{k}` entry: one map per request, its fields in
    declaration order and then `t` (the bytes the dataclass version wrote)."""
    return bytes(msgpack.packb([{**msgspec.structs.asdict(i), "t": i.t} for i in items], use_bin_type=True))


def decode_batch(raw: bytes) -> list[Request]:
    """The fast path: every request of one entry's batch, or msgspec.DecodeError if ANY item is
    bad (then `decode_requests` tells the good ones from the bad)."""
    return _BATCH.decode(raw)


def decode_requests(raw: bytes) -> list[Request | IntakeProtocolError]:
    """Decode one entry's batch; an undecodable item becomes an IntakeProtocolError in place."""
    try:
        return list(_BATCH.decode(raw))
    except msgspec.DecodeError:
        pass
    try:
        rows = _RAW_ITEMS.decode(raw)
    except msgspec.ValidationError as exc:
        return [IntakeProtocolError(f"intake batch is not a list: {exc}")]
    except msgspec.DecodeError as exc:
        return [IntakeProtocolError(f"not a msgpack batch: {exc}")]
    out: list[Request | IntakeProtocolError] = []
    for row in rows:
        try:
            out.append(_ITEM.decode(row))
        except msgspec.DecodeError as exc:
            out.append(IntakeProtocolError(f"bad intake item {_preview(row)}: {exc}"))
    return out


def _preview(row: msgspec.Raw) -> str:
    try:
        return f"{msgpack.unpackb(row, raw=False)!r:.80}"
    except Exception:  # only for the message: the item is already known to be bad
        return f"{bytes(row)!r:.80}"


def encode_reply(reply: Reply) -> bytes:
    """The map of every field in declaration order (the bytes the dataclass version wrote)."""
    return _ENCODER.encode(reply)


def decode_reply(raw: bytes) -> Reply:
    try:
        return _REPLY.decode(raw)
    except msgspec.DecodeError as exc:
        raise IntakeProtocolError(f"bad reply: {exc}") from exc


def encode_user_events(user_id: int, events: list[dict[str, Any]]) -> bytes:
    """msgpack of {"user", "events"} (msgspec writes the bytes msgpack.packb wrote, faster)."""
    return _ENCODER.encode({"user": user_id, "events": events})


def decode_user_events(raw: bytes) -> dict[str, Any]:
    row = msgpack.unpackb(raw, raw=False)
    if not isinstance(row, dict):
        raise IntakeProtocolError("user event message is not a map")
    return row
