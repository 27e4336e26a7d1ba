"""SettleResult.events: a batch's user events are built from its trade rows and order-event tuples
only for the users who listen, each user's in seq order (a trade's buyer's fill before its
seller's), in the published shape."""

from __future__ import annotations

from ledger.settlement import SettleResult

BUYER, SELLER, OTHER = 11, 12, 13


def _result(listeners: set[int]) -> SettleResult:
    res = SettleResult(listeners=frozenset(listeners))
    # (seq, buy order, sell order, buyer, seller, price, qty, base, quote, buyer fee, seller fee, ts)
    res.trades = [(5, 101, 102, BUYER, SELLER, 300, 2, 200_000, 600_000, 20, 600, 1000),
                  (7, 103, 102, OTHER, SELLER, 300, 1, 100_000, 300_000, 10, 300, 1001)]
    res.trade_sides = ["buy", "buy"]
    res.order_events = [(4, SELLER, 102, "open", 0, 999), (6, BUYER, 101, "filled", 2, 1000),
                        (8, SELLER, 102, "filled", 3, 1001), (9, OTHER, 555, None, "unknown order", 1002)]
    return res


def test_only_listeners_in_seq_order_with_the_published_fields() -> None:
    events = _result({SELLER, OTHER}).events("BTC-USDT", "BTC", "USDT")
    assert set(events) == {SELLER, OTHER}
    seller = events[SELLER]
    assert [(e["type"], e.get("state")) for e in seller] == [("order", "open"), ("fill", None), ("fill", None),
                                                              ("order", "filled")]
    assert seller[1] == {"type": "fill", "market": "BTC-USDT", "order_id": 102, "side": "sell", "liquidity": "maker",
                         "seq": 5, "price_ticks": 300, "qty_lots": 2, "base_amount": 200_000,
                         "quote_amount": 600_000, "fee": 600, "fee_asset": "USDT", "ts_ms": 1000}
    assert seller[3] == {"type": "order", "market": "BTC-USDT", "order_id": 102, "state": "filled",
                         "filled_lots": 3, "ts_ms": 1001}
    other = events[OTHER]
    assert [e["type"] for e in other] == ["fill", "cancel_rejected"]
    assert (other[0]["side"], other[0]["liquidity"], other[0]["fee"], other[0]["fee_asset"]) == (
        "buy", "taker", 10, "BTC")
    assert other[1] == {"type": "cancel_rejected", "market": "BTC-USDT", "order_id": 555,
                        "reason": "unknown order", "ts_ms": 1002}


def test_a_self_trade_gives_the_buy_fill_first_and_nobody_listening_gives_nothing() -> None:
    res = _result({BUYER})
    res.trades = [(5, 101, 104, BUYER, BUYER, 300, 2, 200_000, 600_000, 20, 600, 1000)]
    res.trade_sides = ["sell"]
    res.order_events = []
    fills = res.events("BTC-USDT", "BTC", "USDT")[BUYER]
    assert [(f["order_id"], f["side"], f["liquidity"]) for f in fills] == [(101, "buy", "maker"),
                                                                           (104, "sell", "taker")]
    silent = _result(set()).events("BTC-USDT", "BTC", "USDT")
    assert dict(silent) == {}
    assert silent[BUYER] == []  # a listener with only balance changes gets them appended
