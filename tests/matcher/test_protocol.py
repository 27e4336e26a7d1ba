"""The stream codec: what `encode_batch` writes is exactly the msgpack of each item's field map
(as the other side and older builds read it), and `decode_*` turn it back or refuse with
ProtocolError."""

from __future__ import annotations

from dataclasses import asdict

import msgpack
import pytest

from matcher.protocol import (
    CancelOrder,
    CancelRejected,
    Command,
    Done,
    DoneReason,
    Event,
    Opened,
    PlaceOrder,
    ProtocolError,
    Trade,
    decode_commands,
    decode_events,
    encode_batch,
)

EVENTS: list[Event] = [Trade(1, 2, 3, 4, 5, "buy", 300_000, 7, 1_764_130_000_000), Opened(2, 9, 8, "sell", 3, 4, 5),
          Done(3, 4, 5, DoneReason.FILLED, 0, 0, 6, ""), Done(4, 6, 5, DoneReason.CANCELED, 2, 9, 7, "stp"),
          CancelRejected(5, 5, 6, "unknown order", 7)]
COMMANDS: list[Command] = [
    PlaceOrder(11, 3, "buy", "limit", 300_000, 5, None, "GTC", False, "cancel_taker", 0, 1, 1_000),
    PlaceOrder(12, 4, "buy", "market", None, None, 999, "IOC", False, "none", 1, 1, 1_001),
    CancelOrder(11, 3, 0, 2, 1_002)]


def _reference(items: list[Command] | list[Event]) -> bytes:
    """The wire form as first defined: a list of field maps, enums as their values."""
    rows = []
    for item in items:
        row = asdict(item)
        if isinstance(item, Done):
            row["reason"] = item.reason.value
        rows.append(row)
    return bytes(msgpack.packb(rows, use_bin_type=True))


def test_encoding_is_the_field_maps_and_round_trips() -> None:
    assert encode_batch(EVENTS) == _reference(EVENTS)
    assert encode_batch(COMMANDS) == _reference(COMMANDS)
    assert decode_events(encode_batch(EVENTS)) == EVENTS
    assert decode_commands(encode_batch(COMMANDS)) == COMMANDS
    done = decode_events(encode_batch(EVENTS))[2]
    assert isinstance(done, Done) and isinstance(done.reason, DoneReason)


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xc1", "not a msgpack batch"),
    (msgpack.packb({"t": "place"}), "batch is not a list"),
    (msgpack.packb([{"t": "teleport"}]), "unknown item"),
    (msgpack.packb([{"t": "cancel", "oid": 1}]), "bad cancel item"),
])
def test_bad_command_batches_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_commands(raw)


def test_bad_done_reason_is_refused() -> None:
    row = {**asdict(EVENTS[2]), "reason": "vanished"}
    with pytest.raises(ProtocolError, match="bad done item"):
        decode_events(msgpack.packb([row]))
