"""The engine's events (`match:out{M}`) as the ledger reads them: typed, checked as they are decoded.

The structs mirror `matcher.protocol`'s event dataclasses field for field (tests check that a batch
the engine writes decodes to the same values); the wire's `e` selects the struct.
"""

from __future__ import annotations

from typing import Literal, final

import msgspec

from matcher.protocol import ProtocolError


@final
class EvTrade(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="trade"):
    """A `match:out` trade as settlement reads it (the fields of `matcher.protocol.Trade`)."""

    seq: int
    taker: int
    maker: int
    taker_user: int
    maker_user: int
    taker_side: Literal["buy", "sell"]
    price: int
    qty: int
    ts_ms: int


@final
class EvOpen(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="open"):
    seq: int
    oid: int
    user: int
    side: str
    price: int
    remaining: int
    ts_ms: int


@final
class EvDone(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="done"):
    seq: int
    oid: int
    user: int
    reason: Literal["filled", "canceled", "expired", "rejected"]
    remaining: int
    funds_remaining: int
    ts_ms: int
    detail: str = ""


@final
class EvCancelReject(msgspec.Struct, frozen=True, gc=False, tag_field="e", tag="cancel_reject"):
    seq: int
    oid: int
    user: int
    reason: str
    ts_ms: int


SettleEvent = EvTrade | EvOpen | EvDone | EvCancelReject

# A typed decoder: each map becomes the Struct its `e` names, with every field present and of its
# type (extra fields are ignored, as from a newer engine); about four times faster than plain maps
# checked in Python (0.16 against 0.6-0.7 us an event, measured on 1,000-event batches).
_decode_events = msgspec.msgpack.Decoder(list[SettleEvent]).decode


def decode_event_rows(raw: bytes) -> list[SettleEvent]:
    """One `match:out` batch as typed events. Raises ProtocolError, as
    `matcher.protocol.decode_events` does, for a batch that is not msgpack, an unknown kind, a
    missing field, a field of the wrong type or an unknown done reason."""
    try:
        return _decode_events(raw)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise ProtocolError(f"bad match:out batch: {exc}") from exc
