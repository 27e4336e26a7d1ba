"""The matching engine of one market: protocol commands in, numbered protocol events out.

It validates each `PlaceOrder` / `CancelOrder` (a bad one becomes a `Done(rejected)` with a
reason, never an exception: rejections are result codes), drives the `OrderBook` core, and
gives every event the market's next sequence number (strictly +1, starting at 1). It has no
clock and no randomness: `ts_ms` of each event is the command's own `ts_ms`, so replaying
the same commands from the same snapshot gives byte-identical events. `snapshot()` /
`Engine.restore()` move the whole state (book and last seq) to and from bytes (msgpack).
"""

from __future__ import annotations

from typing import Any

import msgpack
import msgspec

from matcher.book import (
    EV_CANCEL_REJECT,
    EV_DONE,
    EV_OPEN,
    EV_TRADE,
    FOK,
    GTC,
    IOC,
    R_REJECTED,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    STP_NONE,
    EventTuple,
    OrderBook,
)
from matcher.errors import SnapshotError
from matcher.protocol import (
    CancelRejected,
    Command,
    Done,
    DoneReason,
    Event,
    Opened,
    PlaceOrder,
    Trade,
    WireCancelRejected,
    WireCommand,
    WireDone,
    WireEvent,
    WireOpened,
    WirePlaceOrder,
    WireTrade,
)

TIF_CODES = {"GTC": GTC, "IOC": IOC, "FOK": FOK}
STP_CODES = {"none": STP_NONE, "cancel_taker": STP_CANCEL_TAKER, "cancel_maker": STP_CANCEL_MAKER,
             "cancel_both": STP_CANCEL_BOTH}
REASONS = (DoneReason.FILLED, DoneReason.CANCELED, DoneReason.EXPIRED, DoneReason.REJECTED)
_REASON_VALUES = tuple(r.value for r in REASONS)
SNAPSHOT_VERSION = 1
_encode_snapshot = msgspec.msgpack.Encoder().encode  # the bytes of msgpack.packb(data, use_bin_type=True), faster


def _positive_int(value: object) -> bool:
    return type(value) is int and value > 0


def _invalid(cmd: PlaceOrder | WirePlaceOrder) -> str | None:
    """Why a PlaceOrder cannot be applied, or None when it is well formed."""
    if cmd.side not in ("buy", "sell"):
        return f"side must be buy or sell, got {cmd.side!r}"
    if cmd.stp not in STP_CODES:
        return f"unknown stp mode {cmd.stp!r}"
    if cmd.type == "limit":
        if cmd.tif not in TIF_CODES:
            return f"unknown time in force {cmd.tif!r}"
        if not _positive_int(cmd.price):
            return "limit price must be a positive integer number of ticks"
        if not _positive_int(cmd.qty):
            return "quantity must be a positive integer number of lots"
        if cmd.funds is not None:
            return "a limit order cannot give funds"
        return None
    if cmd.type == "market":
        if cmd.price is not None:
            return "a market order has no price"
        if cmd.post_only:
            return "a market order cannot be post-only"
        if cmd.funds is not None:
            if cmd.side != "buy":
                return "only a market buy may give funds"
            if cmd.qty is not None:
                return "a market buy gives qty or funds, not both"
            if not _positive_int(cmd.funds):
                return "funds must be a positive integer of tick-lot units"
            return None
        if not _positive_int(cmd.qty):
            return "quantity must be a positive integer number of lots"
        return None
    return f"unknown order type {cmd.type!r}"


class Engine:
    """One market's engine. `seq` is the last sequence number given (0 before any event)."""

    __slots__ = ("book", "seq")

    def __init__(self, book: OrderBook | None = None, seq: int = 0) -> None:
        self.book = book if book is not None else OrderBook()
        self.seq = seq

    def execute(self, cmd: Command | WireCommand, out: list[EventTuple]) -> None:
        """Apply `cmd` (either form), appending the core's event tuples to `out` (no seq given yet)."""
        book = self.book
        if cmd.t == "cancel":  # not isinstance(): a Struct's metaclass makes that slow path cost ~5%
            book.cancel(out, cmd.oid, cmd.user)
            return
        if cmd.type == "limit":
            # the common case, checked inline: a well-formed limit order (else `_invalid` says why)
            side, price, qty = cmd.side, cmd.price, cmd.qty
            tif, stp = TIF_CODES.get(cmd.tif), STP_CODES.get(cmd.stp)
            if (tif is not None and stp is not None and (side == "buy" or side == "sell") and type(price) is int
                    and price > 0 and type(qty) is int and qty > 0 and cmd.funds is None):
                book.place_limit(out, cmd.oid, cmd.user, side == "buy", price, qty, tif, cmd.post_only, stp)
                return
        reason = _invalid(cmd)
        if reason is not None:
            out.append((EV_DONE, cmd.oid, cmd.user, R_REJECTED, cmd.qty or 0, cmd.funds or 0, reason))
            return
        is_buy = cmd.side == "buy"
        stp = STP_CODES[cmd.stp]
        if cmd.type == "limit":
            book.place_limit(out, cmd.oid, cmd.user, is_buy, cmd.price, cmd.qty, TIF_CODES[cmd.tif],  # type: ignore[arg-type]
                             cmd.post_only, stp)
        elif cmd.funds is not None:
            book.place_market_funds(out, cmd.oid, cmd.user, cmd.funds, stp)
        else:
            book.place_market(out, cmd.oid, cmd.user, is_buy, cmd.qty, stp)  # type: ignore[arg-type]

    def apply(self, cmd: Command) -> list[Event]:
        """Apply one command; returns its events, numbered from `seq + 1`."""
        out: list[EventTuple] = []
        self.execute(cmd, out)
        events = to_events(out, self.seq + 1, cmd.ts_ms)
        self.seq += len(out)
        return events

    def apply_wire(self, cmd: Command) -> list[dict[str, Any]]:
        """Like `apply`, but returns the events already in their wire form (protocol `_to_wire`)."""
        out: list[EventTuple] = []
        self.execute(cmd, out)
        rows = to_wire(out, self.seq + 1, cmd.ts_ms)
        self.seq += len(out)
        return rows

    def apply_into(self, cmd: Command | WireCommand, rows: list[WireEvent]) -> None:
        """Apply one command, appending its events to `rows` as wire Structs (the runner's path:
        they encode to the bytes of `apply_wire`'s dicts, at about half the cost)."""
        out: list[EventTuple] = []
        self.execute(cmd, out)
        # core tuples -> wire Structs, here rather than in a function like `to_wire`: one call less per command
        append = rows.append
        seq = self.seq
        ts_ms = cmd.ts_ms
        for ev in out:
            seq += 1
            kind = ev[0]
            if kind == EV_TRADE:
                append(WireTrade(seq, ev[1], ev[2], ev[3], ev[4], "buy" if ev[5] else "sell", ev[6], ev[7], ts_ms))
            elif kind == EV_DONE:
                append(WireDone(seq, ev[1], ev[2], _REASON_VALUES[ev[3]], ev[4], ev[5], ts_ms, ev[6]))
            elif kind == EV_OPEN:
                append(WireOpened(seq, ev[1], ev[2], "buy" if ev[3] else "sell", ev[4], ev[5], ts_ms))
            else:
                append(WireCancelRejected(seq, ev[1], ev[2], ev[3], ts_ms))
        self.seq = seq

    def next_seq(self) -> int:
        """Take one sequence number for an event made outside the engine (replay errors)."""
        self.seq += 1
        return self.seq

    # ---- snapshot ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return _encode_snapshot({"v": SNAPSHOT_VERSION, "seq": self.seq, "orders": self.book.dump()})

    @classmethod
    def restore(cls, raw: bytes) -> Engine:
        try:
            data = msgpack.unpackb(raw, raw=False)
            if not isinstance(data, dict) or data.get("v") != SNAPSHOT_VERSION:
                raise SnapshotError("engine snapshot has an unknown format or version")
            return cls(OrderBook.load(data["orders"]), int(data["seq"]))
        except SnapshotError:
            raise
        except (ValueError, TypeError, KeyError, msgpack.ExtraData, msgpack.FormatError) as exc:
            raise SnapshotError(f"engine snapshot is corrupt: {exc}") from exc


def to_events(out: list[EventTuple], first_seq: int, ts_ms: int) -> list[Event]:
    """Core tuples -> protocol events numbered from `first_seq`."""
    events: list[Event] = []
    seq = first_seq
    for ev in out:
        kind = ev[0]
        if kind == EV_TRADE:
            events.append(Trade(seq, ev[1], ev[2], ev[3], ev[4], "buy" if ev[5] else "sell", ev[6], ev[7], ts_ms))
        elif kind == EV_DONE:
            events.append(Done(seq, ev[1], ev[2], REASONS[ev[3]], ev[4], ev[5], ts_ms, ev[6]))
        elif kind == EV_OPEN:
            events.append(Opened(seq, ev[1], ev[2], "buy" if ev[3] else "sell", ev[4], ev[5], ts_ms))
        else:
            events.append(CancelRejected(seq, ev[1], ev[2], ev[3], ts_ms))
        seq += 1
    return events


def to_wire(out: list[EventTuple], first_seq: int, ts_ms: int) -> list[dict[str, Any]]:
    """Core tuples -> the dicts `protocol.encode_batch` would write for the same events.

    The runner uses this to skip building dataclasses on its hot path; a test checks that the
    result equals `protocol._to_wire` of `to_events(...)` field for field.
    """
    rows: list[dict[str, Any]] = []
    seq = first_seq
    for ev in out:
        kind = ev[0]
        if kind == EV_TRADE:
            rows.append({"seq": seq, "taker": ev[1], "maker": ev[2], "taker_user": ev[3], "maker_user": ev[4],
                         "taker_side": "buy" if ev[5] else "sell", "price": ev[6], "qty": ev[7], "ts_ms": ts_ms,
                         "e": "trade"})
        elif kind == EV_DONE:
            rows.append({"seq": seq, "oid": ev[1], "user": ev[2], "reason": _REASON_VALUES[ev[3]], "remaining": ev[4],
                         "funds_remaining": ev[5], "ts_ms": ts_ms, "detail": ev[6], "e": "done"})
        elif kind == EV_OPEN:
            rows.append({"seq": seq, "oid": ev[1], "user": ev[2], "side": "buy" if ev[3] else "sell", "price": ev[4],
                         "remaining": ev[5], "ts_ms": ts_ms, "e": "open"})
        elif kind == EV_CANCEL_REJECT:
            rows.append({"seq": seq, "oid": ev[1], "user": ev[2], "reason": ev[3], "ts_ms": ts_ms,
                         "e": "cancel_reject"})
        seq += 1
    return rows

