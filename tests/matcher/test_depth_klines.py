"""Depth from events against the engine's own book; K-line buckets and aggregation."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from matcher.depth import DepthBook
from matcher.engine import Engine
from matcher.klines import INTERVALS_MS, Candle, KlineAggregator, bucket_start_ms
from tests.matcher.flows import random_flow


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def test_depth_from_events_equals_engine_book() -> None:
    for seed in range(200):
        engine = Engine()
        depth = DepthBook()
        for cmd in random_flow(random.Random(seed), 200, users=3):
            for row in engine.apply_wire(cmd):
                depth.apply(row)
            bids, asks = depth.top(1000)
            assert [tuple(b) for b in bids] == engine.book.bids.depth(1000)
            assert [tuple(a) for a in asks] == engine.book.asks.depth(1000)
            assert set(depth.resting) == set(engine.book.orders)
        restored = DepthBook.load(depth.dump())
        assert restored.top(50) == depth.top(50) and restored.resting == depth.resting


def test_depth_changes_report_removed_levels() -> None:
    engine = Engine()
    depth = DepthBook()
    from matcher.protocol import CancelOrder, PlaceOrder

    for row in engine.apply_wire(PlaceOrder(1, 1, "sell", "limit", 101, 5, None, "GTC", False, "none", 0, 1, 0)):
        depth.apply(row)
    assert depth.take_changes() == ([], [[101, 5]])
    for row in engine.apply_wire(CancelOrder(1, 1, 0, 2, 0)):
        depth.apply(row)
    assert depth.take_changes() == ([], [[101, 0]])
    assert depth.seq == 2


@pytest.mark.parametrize("ts,interval,start", [
    ("2024-01-04T12:34:56", "1w", "2024-01-01T00:00:00"),  # Thursday -> Monday
    ("2024-01-01T00:00:00", "1w", "2024-01-01T00:00:00"),  # Monday midnight starts its own week
    ("2023-12-31T23:59:59", "1w", "2023-12-25T00:00:00"),  # Sunday belongs to the week before
    ("1970-01-01T00:00:00", "1w", "1969-12-29T00:00:00"),  # the epoch was a Thursday
    ("2024-01-04T12:34:56", "1d", "2024-01-04T00:00:00"),
    ("2024-01-04T15:34:56", "4h", "2024-01-04T12:00:00"),
    ("2024-01-04T12:34:56", "15m", "2024-01-04T12:30:00"),
    ("2024-01-04T12:34:56", "1m", "2024-01-04T12:34:00"),
])
def test_bucket_alignment(ts: str, interval: str, start: str) -> None:
    assert bucket_start_ms(_ms(ts), interval) == _ms(start)
    if interval == "1w":
        assert datetime.fromtimestamp(bucket_start_ms(_ms(ts), interval) / 1000, UTC).weekday() == 0


def test_aggregation_matches_naive_grouping() -> None:
    rng = random.Random(9)
    agg = KlineAggregator()
    trades = []
    ts = _ms("2024-02-28T22:00:00")
    closed: list[tuple[str, Candle]] = []
    for seq in range(1, 3000):
        ts += rng.randint(0, 90_000)
        price, qty = rng.randint(900, 1100), rng.randint(1, 50)
        trades.append((seq, ts, price, qty))
        closed.extend(agg.add_trade(price, qty, ts, seq))
    for interval in INTERVALS_MS:
        groups: dict[int, list[tuple[int, int, int, int]]] = {}
        for t in trades:
            groups.setdefault(bucket_start_ms(t[1], interval), []).append(t)
        want = [[start, g[0][2], max(x[2] for x in g), min(x[2] for x in g), g[-1][2], sum(x[3] for x in g),
                 sum(x[2] * x[3] for x in g), len(g), g[0][0], g[-1][0]] for start, g in sorted(groups.items())]
        got = [c.to_list() for iv, c in closed if iv == interval] + [agg.current[interval].to_list()]
        assert got == want, interval
    assert KlineAggregator.load(agg.dump()).dump() == agg.dump()
