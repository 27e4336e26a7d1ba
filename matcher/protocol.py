"""The engine's wire protocol: commands in on `match:in{M}`, events out on `match:out{M}`.

This module is the contract between the ledger (which forwards accepted orders and cancels
and settles events) and the matcher (which applies commands and emits events). It is pure:
dataclasses and msgpack encoding, no I/O.

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
from typing import Any, Literal

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

_EVENT_TYPES: dict[str, type[Any]] = {"trade": Trade, "open": Opened, "done": Done, "cancel_reject": CancelRejected}
_COMMAND_TYPES: dict[str, type[Any]] = {"place": PlaceOrder, "cancel": CancelOrder}


class ProtocolError(ValueError):
    """A stream item that does not decode into a known command or event."""


# msgspec encodes a dataclass as the map of its fields in order and a StrEnum as its value: the
# same bytes as msgpack.packb([asdict(i) ...]) (a test checks it), about 40 times faster (no deep
# copy); its untyped decoder builds the same maps as msgpack.unpackb(raw, raw=False), ~2.6x faster.
_encode = msgspec.msgpack.Encoder().encode
_decode_msgpack = msgspec.msgpack.Decoder().decode


def encode_batch(items: list[Command] | list[Event]) -> bytes:
    return _encode(items)


def _decode(raw: bytes, key: str, types: dict[str, type[Any]]) -> list[Any]:
    try:
        rows = _decode_msgpack(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"not a msgpack batch: {exc}") from exc
    if not isinstance(rows, list):
        raise ProtocolError("batch is not a list")
    out: list[Any] = []
    for row in rows:
        if not isinstance(row, dict) or row.get(key) not in types:
            raise ProtocolError(f"unknown item {row!r:.80}")
        cls = types[row[key]]
        try:
            if cls is Done:
                row = {**row, "reason": DoneReason(row["reason"])}
            out.append(cls(**row))
        except (TypeError, ValueError) as exc:
            raise ProtocolError(f"bad {row[key]} item: {exc}") from exc
    return out


def decode_commands(raw: bytes) -> list[Command]:
    return _decode(raw, "t", _COMMAND_TYPES)


def decode_events(raw: bytes) -> list[Event]:
    return _decode(raw, "e", _EVENT_TYPES)
