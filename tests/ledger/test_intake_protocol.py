"""Round trips of the intake contract (requests, replies, shard function)."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import msgspec
import pytest

from ledger.errors import IntakeProtocolError
from ledger.intake_protocol import (
    CancelAllRequest,
    CancelRequest,
    PlaceOrderRequest,
    Reply,
    Request,
    WithdrawRequest,
    decode_reply,
    decode_requests,
    encode_reply,
    encode_requests,
    encode_user_events,
    intake_stream,
    shard_for_user,
)


def test_requests_round_trip_and_bad_items_are_isolated() -> None:
    items: list[Request] = [
        PlaceOrderRequest("r1", "intake:reply:a", 7, "BTC-USDT", "buy", "limit", "30000.1", "0.001", None, 5,
                          client_order_id="c1"),
        CancelRequest("r2", "", 7, "BTC-USDT", 6, order_id=12),
        CancelAllRequest("r3", "", 7, 7),
        WithdrawRequest("r4", "x", 7, "BTC", "0.5", "bcrt1qxyz", 8),
    ]
    assert decode_requests(encode_requests(items)) == items
    raw = msgpack.packb([{"t": "place", "rid": "x"}, {"t": "bogus"}, {"t": "cancel_all", "rid": "r", "reply_to": "",
                                                                       "user": 1, "ts_ms": 1}])
    out = decode_requests(raw)
    assert isinstance(out[0], IntakeProtocolError) and isinstance(out[1], IntakeProtocolError)
    assert out[2] == CancelAllRequest("r", "", 1, 1)
    assert isinstance(decode_requests(b"\xc1")[0], IntakeProtocolError)


def asdict_reply(r: Reply) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__struct_fields__}


def test_wrongly_typed_or_unknown_fields_are_protocol_errors_in_place() -> None:
    good = {"t": "cancel_all", "rid": "r", "reply_to": "", "user": 1, "ts_ms": 1}
    place = {"t": "place", "rid": "p", "reply_to": "", "user": 1, "market": "BTC-USDT", "side": "buy",
             "type": "limit", "price": "10", "qty": "0.5", "funds": None, "ts_ms": 1}
    raw = msgpack.packb([{**good, "user": "1"}, good, {**place, "price": 10.5}, {**good, "extra": 1}, 5, place,
                         {**place, "side": "sideways", "tif": "GTD"}])
    out = decode_requests(raw)
    assert isinstance(out[0], IntakeProtocolError) and "Expected `int`, got `str` - at `$.user`" in str(out[0])
    assert out[1] == CancelAllRequest("r", "", 1, 1)
    # money never arrives as a float: a price must be a decimal string
    assert isinstance(out[2], IntakeProtocolError) and "`$.price`" in str(out[2])
    assert isinstance(out[3], IntakeProtocolError) and "unknown field `extra`" in str(out[3])
    assert isinstance(out[4], IntakeProtocolError)
    assert out[5] == PlaceOrderRequest("p", "", 1, "BTC-USDT", "buy", "limit", "10", "0.5", None, 1)
    # values outside side/type/tif/stp pass decoding: the ledger rejects them with a reason the client sees
    assert isinstance(out[6], PlaceOrderRequest) and out[6].side == "sideways" and out[6].tif == "GTD"
    assert [isinstance(x, IntakeProtocolError) for x in decode_requests(msgpack.packb({"a": 1}))] == [True]
    assert isinstance(decode_requests(b"")[0], IntakeProtocolError)
    assert isinstance(decode_requests(msgpack.packb([good]) + b"\x00")[0], IntakeProtocolError)


def test_request_encoding_is_the_map_the_api_always_wrote() -> None:
    """Field order, every field present, then the tag `t`: the bytes of the former dataclasses."""
    r = PlaceOrderRequest("r1", "ch", 7, "BTC-USDT", "buy", "limit", "30000.1", "0.001", None, 5, client_order_id="c")
    expected = msgpack.packb([{"rid": "r1", "reply_to": "ch", "user": 7, "market": "BTC-USDT", "side": "buy",
                               "type": "limit", "price": "30000.1", "qty": "0.001", "funds": None, "ts_ms": 5,
                               "client_order_id": "c", "tif": "GTC", "post_only": False, "stp": "none",
                               "t": "place"}], use_bin_type=True)
    assert encode_requests([r]) == expected
    c = CancelRequest("r2", "", 7, "BTC-USDT", 6, order_id=12)
    assert encode_requests([c]) == msgpack.packb([{"rid": "r2", "reply_to": "", "user": 7, "market": "BTC-USDT",
                                                   "ts_ms": 6, "order_id": 12, "client_order_id": None,
                                                   "t": "cancel"}], use_bin_type=True)
    assert r.t == "place" and c.t == "cancel"


def test_reply_and_shard() -> None:
    r = Reply("r1", True, "place", "pending", order_id=5, client_order_id="c")
    assert decode_reply(encode_reply(r)) == r
    # the map of every field in order: the bytes the API has always read
    assert encode_reply(r) == msgpack.packb({"rid": "r1", "ok": True, "kind": "place", "state": "pending",
                                             "order_id": 5, "client_order_id": "c", "reason": "",
                                             "duplicate": False, "withdrawal_id": None, "canceled": 0})
    for bad in (b"\xc1", msgpack.packb([1]), msgpack.packb({"rid": "r"}), msgpack.packb({**asdict_reply(r), "x": 1})):
        with pytest.raises(IntakeProtocolError):
            decode_reply(bad)
    events: list[dict[str, Any]] = [{"type": "balance", "asset": "BTC", "available": v, "frozen": -v}
                                    for v in (0, 1, 127, 128, 2**31, 2**32, 2**63 - 1, 10**15)]
    assert encode_user_events(7, events) == msgpack.packb({"user": 7, "events": events}, use_bin_type=True)
    assert [shard_for_user(u, 4) for u in range(6)] == [0, 1, 2, 3, 0, 1]
    assert intake_stream(3) == "intake{3}"


def test_fast_command_encoding_equals_the_protocol_encoding() -> None:
    import dataclasses

    import msgspec

    from ledger.intake import PlaceCommand, encode_commands
    from matcher.protocol import CancelOrder, PlaceOrder, encode_batch

    # the intake's PlaceCommand is PlaceOrder's twin: same fields in the same order, same defaults
    twin = [(f.name, f.default) for f in msgspec.structs.fields(PlaceCommand)]
    assert twin == [(f.name, msgspec.NODEFAULT if f.default is dataclasses.MISSING else f.default)
                    for f in dataclasses.fields(PlaceOrder)]
    args: list[tuple[Any, ...]] = [
        (1, 2, "buy", "limit", 100, 5, None, "GTC", False, "none", 0, 1, 7),
        (3, 2, "buy", "market", None, None, 77, "IOC", False, "cancel_taker", 1, 2, 8),
        (2**62, 2**40, "sell", "limit", 2**31, 2**33, None, "FOK", True, "cancel_both", 255, 2**63 - 1, 2**41),
        (0, 1, "sell", "market", None, 65536, None, "GTC", False, "none", 65535, 128, 127),
    ]
    cmds: list[Any] = [PlaceOrder(*a) for a in args]
    cmds += [CancelOrder(1, 2, 0, 3, 9), CancelOrder(2**50, 300, 7, 70000, 1)]
    fast: list[Any] = [PlaceCommand(*a) for a in args] + cmds[len(args):]
    assert encode_commands(cmds) == encode_batch(cmds)
    assert encode_commands(fast) == encode_batch(cmds)


def test_settlement_reads_exactly_the_protocol_event_fields() -> None:
    from ledger.settlement import decode_event_rows
    from matcher.protocol import (
        CancelRejected,
        Done,
        DoneReason,
        Opened,
        ProtocolError,
        Trade,
        decode_events,
        encode_batch,
    )

    events: list[Any] = [
        Trade(1, 5, 4, 2, 3, "buy", 100, 7, 9),
        Opened(2, 6, 2, "sell", 101, 3, 9),
        Done(3, 5, 2, DoneReason.FILLED, 0, 0, 9),
        CancelRejected(4, 8, 2, "unknown order", 9),
    ]
    raw = encode_batch(events)
    rows = decode_event_rows(raw)
    assert decode_events(raw) == events
    # the same fields with the same values (DoneReason is a str enum: equal to its value)
    for row, event in zip(rows, events, strict=True):
        wire = {k: v for k, v in dataclasses.asdict(event).items() if k != "e"}
        assert msgspec.structs.asdict(row) == wire
    assert [type(r).__name__ for r in rows] == ["EvTrade", "EvOpen", "EvDone", "EvCancelReject"]
    done = msgpack.unpackb(encode_batch([events[2]]))[0]
    with pytest.raises(ProtocolError, match="missing required field"):
        decode_event_rows(msgpack.packb([{"e": "trade", "seq": 1}]))
    with pytest.raises(ProtocolError, match="reason"):
        decode_event_rows(msgpack.packb([{**done, "reason": "vanished"}]))
    with pytest.raises(ProtocolError, match="Expected `int`"):
        decode_event_rows(msgpack.packb([{**done, "seq": "3"}]))
    with pytest.raises(ProtocolError):
        decode_event_rows(msgpack.packb([{**done, "e": "teleport"}]))
    with pytest.raises(ProtocolError):
        decode_event_rows(b"\xc1")
