"""Pure balance arithmetic vs the naive model, on random sequences (hypothesis).

Orders go through the real pure matching engine (matcher.engine.Engine), so the trades and
done events are what production would settle; both the arithmetic and the model consume
the same events and must agree on every balance after every step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.arithmetic import (
    Delta,
    Freeze,
    OrderHold,
    add_deltas,
    add_freeze,
    can_spend,
    deposit_deltas,
    fee_for,
    freeze_deltas,
    order_freeze,
    order_notional,
    release_deltas,
    reversal_deltas,
    settle_trade,
    withdrawal_hold_deltas,
    withdrawal_release_deltas,
    withdrawal_settle_deltas,
)
from ledger.errors import ArithmeticInvariantError, InvalidAmountError
from ledger.markets import Market
from matcher.engine import Engine
from matcher.protocol import CancelOrder, Done, PlaceOrder, Trade
from tests.ledger.model import MMarket, Model

M = Market("X-Y", "X", "Y", "0.1", "0.01", base_units_per_lot=10, quote_units_per_tick_lot=3, min_notional=30,
           maker_fee_bps=10, taker_fee_bps=25)
MM = MMarket("X", "Y", 10, 3, 30, 10, 25)
USERS = (1, 2, 3)


def test_add_deltas_sums_per_user_and_asset() -> None:
    acc: dict[tuple[int, str], list[int]] = {(1, "BTC"): [10, 0]}
    add_deltas(acc, (Delta(1, "BTC", -4, 4), Delta(2, "USDT", 7, 0)))
    add_deltas(acc, (Delta(1, "BTC", 4, -4), Delta(1, "USDT", 0, 3)))
    assert acc == {(1, "BTC"): [10, 0], (2, "USDT"): [7, 0], (1, "USDT"): [0, 3]}


def test_fee_rounds_up_in_the_exchanges_favour() -> None:
    assert fee_for(10_000, 25) == 25
    assert fee_for(10_001, 25) == 26  # 25.0025 -> 26
    assert fee_for(1, 1) == 1
    assert fee_for(0, 25) == 0
    assert fee_for(123, 0) == 0
    with pytest.raises(ArithmeticInvariantError):
        fee_for(5, 10_001)


def test_price_improvement_refund_and_market_buy_rules() -> None:
    buy = OrderHold(1, 7, "buy", "limit", 100, quote_units_over := 100 * 5 * 3)
    sell = OrderHold(2, 8, "sell", "limit", 90, 5 * 10)
    eff = settle_trade(M, buy=buy, sell=sell, price_ticks=90, qty_lots=2, taker_side="buy")
    assert quote_units_over == 1500
    assert eff.buy_consumed == 600 and eff.quote_amount == 540  # refund 60 to available
    assert Delta(7, "Y", 60, -600) in eff.deltas
    assert eff.buyer_fee == 1  # ceil(20 * 25 / 10000)
    with pytest.raises(InvalidAmountError):
        order_freeze(M, side="buy", type="market", price_ticks=None, qty_lots=3, funds=None)
    with pytest.raises(ArithmeticInvariantError):
        settle_trade(M, buy=buy, sell=sell, price_ticks=101, qty_lots=1, taker_side="sell")
    with pytest.raises(ArithmeticInvariantError):
        settle_trade(M, buy=buy, sell=sell, price_ticks=95, qty_lots=6, taker_side="sell")


class ArithLedger:
    """The ledger's bookkeeping written with ledger.arithmetic only."""

    def __init__(self) -> None:
        self.bal: dict[tuple[int, str], list[int]] = {}
        self.holds: dict[int, OrderHold] = {}
        self.assets: dict[int, str] = {}

    def apply(self, ds: tuple[Delta, ...]) -> None:
        for d in ds:
            cur = self.bal.setdefault((d.user_id, d.asset), [0, 0])
            cur[0] += d.d_available
            cur[1] += d.d_frozen
            assert cur[1] >= 0

    def negative(self, user: int) -> bool:
        return any(v[0] < 0 for (u, _), v in self.bal.items() if u == user)

    def balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        return {k: (v[0], v[1]) for k, v in self.bal.items() if v != [0, 0]}


limit_op = st.tuples(st.just("limit"), st.sampled_from(USERS), st.sampled_from(["buy", "sell"]), st.integers(8, 12),
                     st.integers(1, 30), st.sampled_from(["GTC", "GTC", "IOC"]))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("deposit"), st.sampled_from(USERS), st.sampled_from(["X", "Y"]),
                  st.integers(1, 5_000)),
        limit_op, limit_op, limit_op, limit_op,
        st.tuples(st.just("mbuy"), st.sampled_from(USERS), st.integers(1, 200)),
        st.tuples(st.just("msell"), st.sampled_from(USERS), st.integers(1, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("withdraw"), st.sampled_from(USERS), st.sampled_from(["X", "Y"]), st.integers(2, 3_000)),
        st.tuples(st.just("wd_end"), st.integers(0, 20), st.booleans()),
        st.tuples(st.just("reverse"), st.integers(0, 20)),
    ),
    min_size=10, max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_arithmetic_matches_model(seq: list[tuple[Any, ...]]) -> None:
    engine = Engine()
    a = ArithLedger()
    model = Model()
    oid = 0
    deposits: list[tuple[int, str, int, bool]] = []
    wds: dict[int, tuple[int, str, int, int]] = {}
    iid = 0
    funding = [("deposit", u, asset, 3_000) for u in USERS for asset in ("X", "Y")]
    for op in funding + seq:
        kind = op[0]
        iid += 1
        if kind == "deposit":
            _, user, asset, amount = op
            a.apply(deposit_deltas(user, asset, amount))
            model.deposit(user, asset, amount)
            deposits.append((user, asset, amount, False))
        elif kind == "reverse":
            live = [i for i, d in enumerate(deposits) if not d[3]]
            if not live:
                continue
            i = live[op[1] % len(live)]
            user, asset, amount, _ = deposits[i]
            deposits[i] = (user, asset, amount, True)
            a.apply(reversal_deltas(user, asset, amount))
            model.reverse(user, asset, amount)
        elif kind in ("limit", "mbuy", "msell"):
            if kind == "limit":
                _, user, side, price, qty, tif = op
                typ, funds = "limit", None
            elif kind == "mbuy":
                _, user, funds = op
                side, typ, price, qty, tif = "buy", "market", None, None, "IOC"
            else:
                _, user, qty = op
                side, typ, price, funds, tif = "sell", "market", None, None, "IOC"
            frz = order_freeze(M, side=side, type=typ, price_ticks=price, qty_lots=qty, funds=funds)
            notional = order_notional(M, side=side, type=typ, price_ticks=price, qty_lots=qty, funds=funds)
            ok = (notional is None or notional >= M.min_notional) and can_spend(
                a.bal.get((user, frz.asset), [0, 0])[0], frz.amount, a.negative(user))
            expect = model.can_place(MM, user, side, typ, price, qty, funds)
            assert ok == (expect is not None)
            if not ok:
                continue
            oid += 1
            a.apply(freeze_deltas(user, frz))
            a.holds[oid] = OrderHold(oid, user, side, typ, price, frz.amount)
            a.assets[oid] = frz.asset
            assert expect is not None
            model.place(oid, MM, user, side, typ, price, *expect)
            events = engine.apply(PlaceOrder(oid, user, side, typ,  # type: ignore[arg-type]
                price, qty, funds, tif, False, "none", 0, iid, iid))
            settle(a, model, events)
        elif kind == "cancel":
            if oid == 0:
                continue
            target = op[1] % oid + 1
            events = engine.apply(CancelOrder(target, a.holds[target].user_id, 0, iid, iid))
            settle(a, model, events)
        elif kind == "withdraw":
            _, user, asset, amount = op
            ok = can_spend(a.bal.get((user, asset), [0, 0])[0], amount, a.negative(user))
            wid = len(wds) + 1
            assert model.hold(wid, user, asset, amount, 1) == ok
            if ok:
                a.apply(withdrawal_hold_deltas(user, asset, amount))
                wds[wid] = (user, asset, amount, 1)
        elif kind == "wd_end":
            if not wds:
                continue
            wid = sorted(wds)[op[1] % len(wds)]
            user, asset, amount, _fee = wds.pop(wid)
            if op[2]:
                a.apply(withdrawal_settle_deltas(user, asset, amount))
                model.settle_withdrawal(wid)
            else:
                a.apply(withdrawal_release_deltas(user, asset, amount))
                model.release_withdrawal(wid)
        assert a.balances() == model.balances()
        assert model.conserved()
    for o in a.holds.values():
        assert o.frozen_remaining >= 0


def settle(a: ArithLedger, model: Model, events: list[Any]) -> None:
    for e in events:
        model.on_event(MM, e)
        if isinstance(e, Trade):
            b_oid, s_oid = (e.taker, e.maker) if e.taker_side == "buy" else (e.maker, e.taker)
            b, s = a.holds[b_oid], a.holds[s_oid]
            eff = settle_trade(M, buy=b, sell=s, price_ticks=e.price, qty_lots=e.qty, taker_side=e.taker_side)
            a.apply(eff.deltas)
            a.holds[b_oid] = OrderHold(b.oid, b.user_id, b.side, b.type, b.price_ticks,
                                       b.frozen_remaining - eff.buy_consumed)
            a.holds[s_oid] = OrderHold(s.oid, s.user_id, s.side, s.type, s.price_ticks,
                                       s.frozen_remaining - eff.sell_consumed)
        elif isinstance(e, Done):
            h = a.holds[e.oid]
            a.apply(release_deltas(h.user_id, a.assets[e.oid], h.frozen_remaining))
            a.holds[e.oid] = OrderHold(h.oid, h.user_id, h.side, h.type, h.price_ticks, 0)


@given(st.lists(st.tuples(st.integers(1, 4), st.sampled_from(["BTC", "USDT"]), st.integers(0, 10**20)), max_size=30),
       st.dictionaries(st.tuples(st.integers(1, 4), st.sampled_from(["BTC", "USDT"])),
                       st.tuples(st.integers(-10**6, 10**20), st.integers(0, 10**20)), max_size=8))
def test_add_freeze_sums_as_add_deltas_of_freeze_deltas(freezes: list[tuple[int, str, int]],
                                                        start: dict[tuple[int, str], tuple[int, int]]) -> None:
    fast = {k: list(v) for k, v in start.items()}
    slow = {k: list(v) for k, v in start.items()}
    for user, asset, amount in freezes:
        add_freeze(fast, user, Freeze(asset, amount))
        add_deltas(slow, freeze_deltas(user, Freeze(asset, amount)))
    assert fast == slow
