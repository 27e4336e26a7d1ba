"""Engine semantics spelled out on small books: priority, maker price, TIFs, STP, funds, rejections."""

from __future__ import annotations

import msgpack
import pytest

from matcher.engine import Engine
from matcher.errors import SnapshotError
from matcher.protocol import CancelOrder, CancelRejected, Done, DoneReason, Event, Opened, PlaceOrder, Trade

_iid = iter(range(1, 1_000_000))


def limit(oid: int, user: int, side: str, price: int, qty: int, tif: str = "GTC", post_only: bool = False,
          stp: str = "none") -> PlaceOrder:
    return PlaceOrder(oid, user, side, "limit", price, qty, None, tif, post_only, stp, 0, next(_iid), 1000)  # type: ignore[arg-type]


def market(oid: int, user: int, side: str, qty: int | None = None, funds: int | None = None,
           stp: str = "none") -> PlaceOrder:
    return PlaceOrder(oid, user, side, "market", None, qty, funds, "GTC", False, stp, 0, next(_iid), 1000)  # type: ignore[arg-type]


def brief(events: list[Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, Trade):
            out.append(("T", e.taker, e.maker, e.price, e.qty))
        elif isinstance(e, Opened):
            out.append(("O", e.oid, e.price, e.remaining))
        elif isinstance(e, Done):
            out.append(("D", e.oid, e.reason.value, e.remaining, e.funds_remaining))
        else:
            assert isinstance(e, CancelRejected)
            out.append(("X", e.oid, e.reason))
    return out


def book(*orders: PlaceOrder) -> Engine:
    engine = Engine()
    for o in orders:
        engine.apply(o)
    return engine


def test_price_then_time_priority_at_maker_price() -> None:
    e = book(limit(1, 1, "sell", 101, 2), limit(2, 2, "sell", 100, 1), limit(3, 3, "sell", 100, 1))
    assert brief(e.apply(limit(4, 4, "buy", 105, 3))) == [
        ("T", 4, 2, 100, 1), ("D", 2, "filled", 0, 0),
        ("T", 4, 3, 100, 1), ("D", 3, "filled", 0, 0),
        ("T", 4, 1, 101, 1),
        ("D", 4, "filled", 0, 0),
    ]
    assert e.book.asks.depth(5) == [(101, 1)]


def test_partial_fill_rests_the_rest_and_seq_is_per_event() -> None:
    e = book(limit(1, 1, "buy", 99, 2))
    events = e.apply(limit(2, 2, "sell", 98, 5))
    assert brief(events) == [("T", 2, 1, 99, 2), ("D", 1, "filled", 0, 0), ("O", 2, 98, 3)]
    assert [ev.seq for ev in events] == [2, 3, 4]
    assert all(ev.ts_ms == 1000 for ev in events)


def test_ioc_and_fok() -> None:
    e = book(limit(1, 1, "sell", 100, 2))
    assert brief(e.apply(limit(2, 2, "buy", 100, 3, tif="FOK"))) == [("D", 2, "rejected", 3, 0)]
    assert brief(e.apply(limit(3, 2, "buy", 100, 3, tif="IOC"))) == [
        ("T", 3, 1, 100, 2), ("D", 1, "filled", 0, 0), ("D", 3, "expired", 1, 0)]
    e = book(limit(1, 1, "sell", 100, 2), limit(2, 1, "sell", 101, 2))
    assert brief(e.apply(limit(3, 2, "buy", 101, 4, tif="FOK")))[-1] == ("D", 3, "filled", 0, 0)


def test_post_only() -> None:
    e = book(limit(1, 1, "sell", 100, 2))
    assert brief(e.apply(limit(2, 2, "buy", 100, 1, post_only=True))) == [("D", 2, "rejected", 1, 0)]
    assert brief(e.apply(limit(3, 2, "buy", 99, 1, post_only=True))) == [("O", 3, 99, 1)]
    assert brief(e.apply(limit(4, 2, "buy", 98, 1, tif="IOC", post_only=True))) == [("D", 4, "rejected", 1, 0)]


def test_market_by_qty_and_by_funds() -> None:
    e = book(limit(1, 1, "sell", 100, 2), limit(2, 1, "sell", 110, 5))
    assert brief(e.apply(market(3, 2, "buy", funds=435))) == [
        ("T", 3, 1, 100, 2), ("D", 1, "filled", 0, 0), ("T", 3, 2, 110, 2), ("D", 3, "filled", 0, 15)]
    assert brief(e.apply(market(4, 2, "buy", qty=9))) == [
        ("T", 4, 2, 110, 3), ("D", 2, "filled", 0, 0), ("D", 4, "expired", 6, 0)]
    assert brief(e.apply(market(5, 2, "buy", funds=50))) == [("D", 5, "expired", 0, 50)]


@pytest.mark.parametrize("stp,want", [
    ("none", [("T", 3, 1, 100, 1), ("D", 1, "filled", 0, 0), ("T", 3, 2, 100, 1), ("D", 2, "filled", 0, 0),
              ("D", 3, "filled", 0, 0)]),
    ("cancel_taker", [("D", 3, "canceled", 2, 0)]),
    ("cancel_maker", [("D", 1, "canceled", 1, 0), ("T", 3, 2, 100, 1), ("D", 2, "filled", 0, 0), ("O", 3, 100, 1)]),
    ("cancel_both", [("D", 1, "canceled", 1, 0), ("D", 3, "canceled", 2, 0)]),
])
def test_self_trade_prevention(stp: str, want: list[tuple[object, ...]]) -> None:
    e = book(limit(1, 7, "sell", 100, 1), limit(2, 8, "sell", 100, 1))
    assert brief(e.apply(limit(3, 7, "buy", 100, 2, stp=stp))) == want


def test_cancel_rules() -> None:
    e = book(limit(1, 1, "buy", 90, 4))
    assert brief(e.apply(CancelOrder(1, 2, 0, next(_iid), 5))) == [("X", 1, "order belongs to another user")]
    assert brief(e.apply(CancelOrder(1, 1, 0, next(_iid), 5))) == [("D", 1, "canceled", 4, 0)]
    assert brief(e.apply(CancelOrder(1, 1, 0, next(_iid), 5))) == [("X", 1, "order not on the book")]
    assert e.book.bids.depth(5) == []


@pytest.mark.parametrize("cmd,detail", [
    (PlaceOrder(1, 1, "buy", "limit", 0, 1, None, "GTC", False, "none", 0, 1, 0), "price"),
    (PlaceOrder(1, 1, "buy", "limit", 10, 0, None, "GTC", False, "none", 0, 1, 0), "quantity"),
    (PlaceOrder(1, 1, "buy", "limit", 10, 1, 5, "GTC", False, "none", 0, 1, 0), "funds"),
    (PlaceOrder(1, 1, "buy", "limit", 10, 1, None, "GTD", False, "none", 0, 1, 0), "time in force"),  # type: ignore[arg-type]
    (PlaceOrder(1, 1, "buy", "market", 10, 1, None, "GTC", False, "none", 0, 1, 0), "no price"),
    (PlaceOrder(1, 1, "sell", "market", None, None, 5, "GTC", False, "none", 0, 1, 0), "only a market buy"),
    (PlaceOrder(1, 1, "buy", "market", None, 1, 5, "GTC", False, "none", 0, 1, 0), "not both"),
    (PlaceOrder(1, 1, "buy", "limit", 10, 1, None, "GTC", False, "maybe", 0, 1, 0), "stp"),  # type: ignore[arg-type]
    (PlaceOrder(1, 1, "up", "limit", 10, 1, None, "GTC", False, "none", 0, 1, 0), "side"),  # type: ignore[arg-type]
])
def test_malformed_orders_are_rejected_not_raised(cmd: PlaceOrder, detail: str) -> None:
    events = Engine().apply(cmd)
    assert len(events) == 1
    done = events[0]
    assert isinstance(done, Done) and done.reason is DoneReason.REJECTED and detail in done.detail


def test_snapshot_roundtrip_and_corruption() -> None:
    e = book(limit(1, 1, "buy", 90, 4), limit(2, 2, "buy", 90, 1), limit(3, 3, "sell", 95, 2))
    e.apply(CancelOrder(1, 1, 0, next(_iid), 0))
    restored = Engine.restore(e.snapshot())
    assert restored.seq == e.seq
    assert restored.book.dump() == e.book.dump()
    nxt = limit(4, 4, "sell", 90, 2)
    assert e.apply(nxt) == restored.apply(nxt)
    with pytest.raises(SnapshotError):
        Engine.restore(b"\x93garbage")
    with pytest.raises(SnapshotError):
        Engine.restore(b"\x81\xa1v\x09")


def test_snapshot_format_is_the_one_older_builds_read_and_wrote() -> None:
    """Version 1: a map of `v`, `seq` and `orders`, each order `[oid, user, is_buy, price, remaining]`,
    bids then asks, best level first, time order. Older builds wrote `is_buy` as 1/0 (still read) and
    read it with bool(), so they read ours too (a rollback keeps its snapshots)."""
    e = book(limit(1, 1, "buy", 90, 4), limit(2, 2, "buy", 91, 1), limit(3, 3, "sell", 95, 2),
             limit(4, 3, "buy", 90, 3))
    e.apply(CancelOrder(2, 1, 0, next(_iid), 0))  # not the owner: stays
    data = msgpack.unpackb(e.snapshot(), raw=False)
    assert data == {"v": 1, "seq": e.seq,
                    "orders": [[2, 2, True, 91, 1], [1, 1, True, 90, 4], [4, 3, True, 90, 3], [3, 3, False, 95, 2]]}
    old = msgpack.packb({"v": 1, "seq": e.seq, "orders": [[oid, user, 1 if buy else 0, price, rem]
                                                          for oid, user, buy, price, rem in data["orders"]]})
    restored = Engine.restore(old)
    assert restored.snapshot() == e.snapshot()
    nxt = limit(5, 5, "sell", 90, 9)
    assert restored.apply(nxt) == e.apply(nxt)


def test_cancelled_orders_do_not_pile_up_behind_a_live_head() -> None:
    e = book(limit(1, 1, "buy", 100, 5))
    for i in range(2, 5000):
        e.apply(limit(i, 2, "buy", 100, 1))
        e.apply(limit(i + 10_000, 2, "buy", 100, 1))
        e.apply(CancelOrder(i, 2, 0, next(_iid), 0))
    level = e.book.bids.levels[100]
    live = sum(1 for o in level if o[0])
    assert live == len(e.book.orders) == 4999
    assert len(level) <= 2 * live + 16
    assert e.book.bids.depth(1) == [(100, 5 + 4998)]
    # and it still matches in time order: the head first, then the survivors oldest first
    events = e.apply(limit(99_999, 3, "sell", 100, 7))
    assert [ev.maker for ev in events if isinstance(ev, Trade)] == [1, 10_002, 10_003]
