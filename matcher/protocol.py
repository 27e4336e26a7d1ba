"""The engine's wire protocol: commands in on `match:in{M}`, events out on `match:out{M}`.

This module is the contract between the ledger (which forwards accepted orders and cancels
and settles events) and the matcher (which applies commands and emits events). It is pure:
dataclasses, their msgspec Struct twins for the runner's hot path (`Wire*`), msgpack encoding;
no I/O.

Units: prices are integer ticks, quantities integer lots, `funds` (market buys by quote
amount) integer notional units of one tick x one lot. The ledger converts ledger units to
and from these with the market's `base_units_per_lot` and `quote_units_per_tick_lot`.

Stream entries carry a batch: one XADD with the field `b` holding a msgpack list of items,
each item keeping its own identity (`shard`, `iid` for commands; `seq` for events). The
exactly-once rules of ARCHITECTURE.md apply per item:
- commands: the engine accepts a command only if its `iid` is above the last `iid` it
  accepted from that intake `shard` (per-shard watermark), so re-sent batches are dropped;
- events: `seq` is the per-market sequence number, strictly +1 per event, deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

import msgspec

Side = Literal["buy", "sell"]
TimeInForce = Literal["GTC", "IOC", "FOK"]
OrderType = Literal["limit", "market"]
STPMode = Literal["none", "cancel_taker", "cancel_maker", "cancel_both"]
BATCH_FIELD = b"b"


class DoneReason(StrEnum):
    FILLED = "filled"
    CANCELED = "canceled"
    EXPIRED = "expired"  # IOC / market remainder that could not fill
    REJECTED = "rejected"  # post-only that would cross, FOK that cannot fill, duplicate id


# ---- commands (ledger -> engine) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """An order the ledger has accepted and frozen funds for.

    `price` is None for market orders. A market buy gives either `qty` (lots) or `funds`
    (tick-lot notional units), never both; every other order gives `qty`.
    `shard`/`iid` identify the intake item this came from (watermark dedupe).
    `ts_ms` is the intake timestamp: the engine never reads a clock.
    """

    oid: int
    user: int
    side: Side
    type: OrderType
    price: int | None
    qty: int | None
    funds: int | None
    tif: TimeInForce
    post_only: bool
    stp: STPMode
    shard: int
    iid: int
    ts_ms: int
    t: Literal["place"] = "place"


@dataclass(frozen=True, slots=True)
class CancelOrder:
    oid: int
    user: int
    shard: int
    iid: int
    ts_ms: int
    t: Literal["cancel"] = "cancel"


Command = PlaceOrder | CancelOrder


# ---- events (engine -> ledger, market data) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Trade:
    """A fill at the maker's price. `taker_side` is the aggressor's side."""

    seq: int
    taker: int
    maker: int
    taker_user: int
    maker_user: int
    taker_side: Side
    price: int
    qty: int
    ts_ms: int
    e: Literal["trade"] = "trade"


@dataclass(frozen=True, slots=True)
class Opened:
    """An order (or its unfilled rest) now rests on the book."""

    seq: int
    oid: int
    user: int
    side: Side
    price: int
    remaining: int
    ts_ms: int
    e: Literal["open"] = "open"


@dataclass(frozen=True, slots=True)
class Done:
    """An order left the book or finished: its remaining frozen funds can be released.

    `remaining` is in lots; for a market buy by funds, `funds_remaining` is the unspent
    notional (tick-lot units), else 0.
    """

    seq: int
    oid: int
    user: int
    reason: DoneReason
    remaining: int
    funds_remaining: int
    ts_ms: int
    detail: str = ""
    e: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class CancelRejected:
    """A cancel for an order that is not on the book (unknown, already done, another user's)."""

    seq: int
    oid: int
    user: int
    reason: str
    ts_ms: int
    e: Literal["cancel_reject"] = "cancel_reject"


Event = Trade | Opened | Done | CancelRejected

class ProtocolError(ValueError):
    """A stream item that does not decode into a known command or event."""


# ---- the wire twins: msgspec Structs for the matcher's hot path -------------------------
#
# The runner decodes a `match:in` batch straight into these (msgspec checks every field's type
# in C: several times faster than untyped maps + `cls(**row)`, and stricter: an id, price or
# quantity that is not an integer is a ProtocolError, not a value the engine or settlement trips
# over later). Their fields are PlaceOrder's / CancelOrder's, in the same order; the engine
# takes either form. `side`, `type`, `tif` and `stp` stay plain strings: a value outside their
# set is the engine's `Done(rejected)` with a reason (the ledger then releases the frozen funds),
# not a poison entry. `gc=False`: scalar fields only, never part of a reference cycle.


class WirePlaceOrder(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                     tag="place"):
    """`PlaceOrder` as decoded from `match:in` (see above). Decode-only: msgspec would encode its
    tag `t` first, where the wire has it last."""

    oid: int
    user: int
    side: str
    type: str
    price: int | None
    qty: int | None
    funds: int | None
    tif: str
    post_only: bool
    stp: str
    shard: int
    iid: int
    ts_ms: int
    t: ClassVar[Literal["place"]] = "place"


class WireCancelOrder(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True, tag_field="t",
                      tag="cancel"):
    """`CancelOrder` as decoded from `match:in`."""

    oid: int
    user: int
    shard: int
    iid: int
    ts_ms: int
    t: ClassVar[Literal["cancel"]] = "cancel"


WireCommand = WirePlaceOrder | WireCancelOrder

# The events as the runner writes them: each encodes (msgspec: a Struct is the map of its fields in
# order) to the same bytes as the event dataclass, `e` last, so `match:out` is unchanged (a test
# checks it). Built positionally by `Engine.apply_into` at about half the cost of a dict per event.


class WireTrade(msgspec.Struct, frozen=True, gc=False):
    seq: int
    taker: int
    maker: int
    taker_user: int
    maker_user: int
    taker_side: str
    price: int
    qty: int
    ts_ms: int
    e: Literal["trade"] = "trade"


class WireOpened(msgspec.Struct, frozen=True, gc=False):
    seq: int
    oid: int
    user: int
    side: str
    price: int
    remaining: int
    ts_ms: int
    e: Literal["open"] = "open"


class WireDone(msgspec.Struct, frozen=True, gc=False):
    seq: int
    oid: int
    user: int
    reason: str
    remaining: int
    funds_remaining: int
    ts_ms: int
    detail: str
    e: Literal["done"] = "done"


class WireCancelRejected(msgspec.Struct, frozen=True, gc=False):
    seq: int
    oid: int
    user: int
    reason: str
    ts_ms: int
    e: Literal["cancel_reject"] = "cancel_reject"


WireEvent = WireTrade | WireOpened | WireDone | WireCancelRejected


# msgspec encodes a dataclass (or Struct) as the map of its fields in order and a StrEnum as its
# value: the same bytes as msgpack.packb([asdict(i) ...]) (a test checks it), about 40 times faster
# (no deep copy); its untyped decoder builds the same maps as msgpack.unpackb(raw, raw=False).
_encode = msgspec.msgpack.Encoder().encode
_decode_msgpack = msgspec.msgpack.Decoder().decode
_decode_wire_batch = msgspec.msgpack.Decoder(list[WireCommand]).decode
_decode_wire_item = msgspec.msgpack.Decoder(WireCommand).decode
_decode_raw_items = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode


def encode_batch(items: list[Command] | list[Event] | list[WireEvent]) -> bytes:
    return _encode(items)


def decode_wire_commands(raw: bytes) -> list[WireCommand]:
    """One `match:in` batch as wire commands (the runner's path).

    Raises ProtocolError when the batch or any item in it is bad (not msgpack, not a list, an
    item of unknown kind `t`, a missing, unknown or wrongly typed field), naming the first one.
    """
    try:
        return _decode_wire_batch(raw)
    except msgspec.DecodeError:
        pass
    # The slow path, for a bad batch only: find the first bad item and say what is wrong with it.
    try:
        items = _decode_raw_items(raw)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"batch is not a list: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a msgpack batch: {exc}") from exc
    for item in items:
        try:
            _decode_wire_item(item)
        except msgspec.DecodeError as exc:
            try:
                row = _decode_msgpack(item)
            except msgspec.DecodeError:
                row = bytes(item)
            kind = row.get("t") if isinstance(row, dict) else None
            if kind not in ("place", "cancel"):
                raise ProtocolError(f"unknown item {row!r:.80}") from exc
            raise ProtocolError(f"bad {kind} item: {exc}") from exc
    raise ProtocolError("undecodable batch")  # every item decodes alone but not the batch: not seen


def decode_commands(raw: bytes) -> list[Command]:
    """One `match:in` batch as PlaceOrder / CancelOrder; raises ProtocolError like
    `decode_wire_commands`, which checks it."""
    out: list[Command] = []
    for c in decode_wire_commands(raw):
        if isinstance(c, WirePlaceOrder):
            out.append(PlaceOrder(c.oid, c.user, c.side, c.type, c.price, c.qty, c.funds, c.tif,  # type: ignore[arg-type]
                                  c.post_only, c.stp, c.shard, c.iid, c.ts_ms))  # type: ignore[arg-type]
        else:
            out.append(CancelOrder(c.oid, c.user, c.shard, c.iid, c.ts_ms))
    return out


_EVENT_TYPES: dict[str, type[Any]] = {"trade": Trade, "open": Opened, "done": Done, "cancel_reject": CancelRejected}


def decode_events(raw: bytes) -> list[Event]:
    try:
        rows = _decode_msgpack(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a msgpack batch: {exc}") from exc
    if not isinstance(rows, list):
        raise ProtocolError("batch is not a list")
    out: list[Event] = []
    for row in rows:
        kind = row.get("e") if isinstance(row, dict) else None
        if not isinstance(kind, str) or kind not in _EVENT_TYPES:
            raise ProtocolError(f"unknown item {row!r:.80}")
        cls = _EVENT_TYPES[kind]
        try:
            if cls is Done:
                row = {**row, "reason": DoneReason(row["reason"])}
            out.append(cls(**row))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad {kind} item: {exc}") from exc
    return out
