"""The fast engine against the naive reference book on random flows (hypothesis and seeded)."""

from __future__ import annotations

import collections
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.engine import Engine
from matcher.protocol import Command, Done, Event, Opened, Trade
from tests.matcher.flows import STP_MODES, random_flow
from tests.matcher.reference import ReferenceBook


def _check_book(engine: Engine, ref: ReferenceBook) -> None:
    bid = engine.book.bids.best_price()
    ask = engine.book.asks.best_price()
    assert bid is None or ask is None or bid < ask, "book is crossed"
    assert engine.book.bids.depth(1000) == ref.depth("buy")
    assert engine.book.asks.depth(1000) == ref.depth("sell")


def _run_both(cmds: list[Command], snapshot_at: int | None = None) -> tuple[list[Event], list[Event]]:
    engine = Engine()
    ref = ReferenceBook()
    got: list[Event] = []
    want: list[Event] = []
    for i, cmd in enumerate(cmds):
        if snapshot_at is not None and i == snapshot_at:
            engine = Engine.restore(engine.snapshot())
        got.extend(engine.apply(cmd))
        want.extend(ref.apply(cmd))
        if got[-1] != want[-1] or len(got) != len(want):
            break
    _check_book(engine, ref)
    return got, want


def _assert_flow(cmds: list[Command], snapshot_at: int | None = None) -> None:
    got, want = _run_both(cmds, snapshot_at)
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        assert g == w, f"event {i} differs: engine {g} reference {w}"
    assert len(got) == len(want)
    assert [e.seq for e in got] == list(range(1, len(got) + 1))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), users=st.integers(1, 5),
       stp=st.sampled_from([*[(m,) for m in STP_MODES], STP_MODES]))
def test_hypothesis_flows_match_reference(seed: int, n: int, users: int, stp: tuple[str, ...]) -> None:
    cmds = random_flow(random.Random(seed), n, users=users, stp_modes=stp)  # type: ignore[arg-type]
    _assert_flow(cmds, snapshot_at=n // 2)


def test_seeded_long_flows_match_reference() -> None:
    # 3,000 flows of 150 commands, every STP mode mixed, snapshot/restore half way in a third of them.
    for seed in range(3000):
        rng = random.Random(seed)
        cmds = random_flow(rng, 150, users=1 + seed % 4)
        _assert_flow(cmds, snapshot_at=75 if seed % 3 == 0 else None)


def test_flows_exercise_every_path() -> None:
    """The random flows really reach trades, STP cancels, FOK rejects, funds buys and rests."""
    seen: set[str] = set()
    for seed in range(300):
        engine = Engine()
        for cmd in random_flow(random.Random(seed), 150):
            for ev in engine.apply(cmd):
                if isinstance(ev, Trade):
                    seen.add("trade-self" if ev.taker_user == ev.maker_user else "trade")
                elif isinstance(ev, Opened):
                    seen.add("open")
                elif isinstance(ev, Done):
                    seen.add(f"done-{ev.reason.value}-{ev.detail}")
                    if ev.funds_remaining:
                        seen.add("funds")
                else:
                    seen.add(ev.e)
    for needed in ("trade", "trade-self", "open", "funds", "cancel_reject", "done-filled-", "done-canceled-",
                   "done-canceled-self-trade prevention", "done-rejected-fill-or-kill cannot fill",
                   "done-rejected-post-only order would cross", "done-rejected-duplicate order id",
                   "done-expired-", "done-expired-no more liquidity"):
        assert needed in seen, needed


@st.composite
def command_lists(draw: st.DrawFn) -> list[Command]:
    """Commands drawn field by field, so hypothesis can shrink a failing flow to a minimal one."""
    from matcher.protocol import CancelOrder, PlaceOrder

    n = draw(st.integers(1, 60))
    cmds: list[Command] = []
    for i in range(n):
        user = draw(st.integers(1, 3))
        stp = draw(st.sampled_from(STP_MODES))
        kind = draw(st.sampled_from(["limit", "limit", "limit", "market", "funds", "cancel"]))
        oid = draw(st.integers(1, 25))  # small id space: duplicates and cancels of unknown ids happen
        if kind == "cancel":
            cmds.append(CancelOrder(oid, user, 0, i + 1, i))
        elif kind == "funds":
            cmds.append(PlaceOrder(oid, user, "buy", "market", None, None, draw(st.integers(1, 500)), "GTC", False,
                                   stp, 0, i + 1, i))
        elif kind == "market":
            cmds.append(PlaceOrder(oid, user, draw(st.sampled_from(["buy", "sell"])), "market", None,
                                   draw(st.integers(1, 8)), None, "GTC", False, stp, 0, i + 1, i))
        else:
            cmds.append(PlaceOrder(oid, user, draw(st.sampled_from(["buy", "sell"])), "limit", draw(st.integers(8, 12)),
                                   draw(st.integers(1, 8)), None, draw(st.sampled_from(["GTC", "IOC", "FOK"])),
                                   draw(st.booleans()), stp, 0, i + 1, i))
    return cmds


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=command_lists(), cut=st.integers(0, 60))
def test_hypothesis_drawn_commands_match_reference(cmds: list[Command], cut: int) -> None:
    _assert_flow(cmds, snapshot_at=min(cut, len(cmds)))


def _deep_level_flow(rng: random.Random, n: int) -> list[Command]:
    """Mostly bids on two prices and cancels of them, few sells: deep levels full of cancelled orders."""
    from matcher.protocol import CancelOrder, PlaceOrder

    cmds: list[Command] = []
    live: list[tuple[int, int]] = []
    for i in range(n):
        r = rng.random()
        user = rng.randint(1, 5)
        if r < 0.35 and live:
            oid, owner = live.pop(rng.randrange(len(live)))
            cmds.append(CancelOrder(oid, owner, 0, i + 1, i))
        elif r < 0.95:
            cmds.append(PlaceOrder(i + 1, user, "buy", "limit", rng.choice((100, 101)), rng.randint(1, 3), None, "GTC",
                                   False, "none", 0, i + 1, i))
            live.append((i + 1, user))
        else:
            cmds.append(PlaceOrder(i + 1, user, "sell", "limit", 100, rng.randint(1, 30), None, "IOC", False,
                                   rng.choice(STP_MODES), 0, i + 1, i))
    return cmds


def test_deep_levels_with_many_cancels_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    import matcher.book as book_module

    rebuilt = 0
    real_deque = collections.deque

    def counting_deque(*args: object) -> object:
        nonlocal rebuilt
        if args and not isinstance(args[0], tuple):
            rebuilt += 1  # a level rebuilt from a generator (compaction), not a new level
        return real_deque(*args)  # type: ignore[call-overload]

    monkeypatch.setattr(book_module, "deque", counting_deque)
    for seed in range(8):
        _assert_flow(_deep_level_flow(random.Random(seed), 1500), snapshot_at=700)
    assert rebuilt > 0, "the flows reached level compaction"
