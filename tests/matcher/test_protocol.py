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
    WireCancelOrder,
    WirePlaceOrder,
    decode_commands,
    decode_events,
    decode_wire_commands,
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


def test_wire_commands_are_the_commands_fields() -> None:
    wire = decode_wire_commands(encode_batch(COMMANDS))
    assert [type(c) for c in wire] == [WirePlaceOrder, WirePlaceOrder, WireCancelOrder]
    for w, c in zip(wire, COMMANDS, strict=True):
        assert w.t == c.t
        assert {f: getattr(w, f) for f in w.__struct_fields__} == {k: v for k, v in asdict(c).items() if k != "t"}


_PLACE = asdict(COMMANDS[0])


@pytest.mark.parametrize(("raw", "message"), [
    (b"\xc1", "not a msgpack batch"),
    (msgpack.packb([_PLACE]) + b"\x00", "not a msgpack batch"),
    (msgpack.packb({"t": "place"}), "batch is not a list"),
    (msgpack.packb([{"t": "teleport"}]), "unknown item"),
    (msgpack.packb([{"t": ["place"]}]), "unknown item"),
    (msgpack.packb([{"oid": 1}]), "unknown item"),
    (msgpack.packb([7]), "unknown item"),
    (msgpack.packb([{"t": "cancel", "oid": 1}]), "bad cancel item: .*missing required field `user`"),
    # wrongly typed fields are refused here rather than reaching the engine or settlement
    (msgpack.packb([{**_PLACE, "price": "300000"}]),
     "bad place item: Expected `int \\| null`, got `str` - at `\\$.price`"),
    (msgpack.packb([{**_PLACE, "qty": 5.0}]), "bad place item: .*qty"),
    (msgpack.packb([{**_PLACE, "iid": True}]), "bad place item: .*iid"),
    (msgpack.packb([{**_PLACE, "post_only": 0}]), "bad place item: .*post_only"),
    (msgpack.packb([{**_PLACE, "side": None}]), "bad place item: .*side"),
    (msgpack.packb([{**_PLACE, "colour": "red"}]), "bad place item: .*unknown field `colour`"),
    # the first bad item is named, also after good ones
    (msgpack.packb([_PLACE, {"t": "cancel", "oid": 1, "user": 2, "shard": 0, "iid": "9", "ts_ms": 1}]),
     "bad cancel item: .*iid"),
])
def test_bad_command_batches_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_wire_commands(raw)
    with pytest.raises(ProtocolError, match=message):
        decode_commands(raw)


def test_unknown_values_of_string_fields_reach_the_engine() -> None:
    """A side, type, tif or stp outside its set is the engine's rejection (a Done the ledger
    settles, releasing the frozen funds), not a protocol error that would skip the entry."""
    row = {**_PLACE, "side": "up", "type": "stop", "tif": "GTD", "stp": "maybe"}
    (cmd,) = decode_wire_commands(msgpack.packb([row]))
    assert isinstance(cmd, WirePlaceOrder) and (cmd.side, cmd.type, cmd.tif, cmd.stp) == ("up", "stop", "GTD", "maybe")


def test_bad_done_reason_is_refused() -> None:
    row = {**asdict(EVENTS[2]), "reason": "vanished"}
    with pytest.raises(ProtocolError, match="bad done item"):
        decode_events(msgpack.packb([row]))
