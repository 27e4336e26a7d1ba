"""K-lines (candles): UTC-aligned buckets and exact integer aggregation of public trades.

Intervals 1m, 5m, 15m, 1h, 4h, 1d and 1w. Buckets are aligned to UTC; a week starts on
Monday 00:00 UTC (as the big exchanges do), not on the epoch's Thursday. All values are exact
integers in engine units: prices in ticks, base volume in lots, quote volume in tick-lot units
(sum of price_ticks * qty_lots); the API converts with the market's tick and lot. Bucket time
is the trade's `ts_ms` (the intake timestamp carried by the engine), never a wall clock, so a
bucket closes when the first trade of a later bucket arrives. Self-trades (allowed by STP
`none`) are not public trades: the caller leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass

INTERVALS_MS: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
    "1w": 604_800_000,
}
WEEK_MS = 604_800_000
MONDAY_EPOCH_MS = 4 * 86_400_000  # 1970-01-05 00:00 UTC, the first Monday after the epoch


def bucket_start_ms(ts_ms: int, interval: str) -> int:
    """Start (ms since epoch, UTC) of the bucket of `interval` holding `ts_ms`."""
    size = INTERVALS_MS[interval]
    if size == WEEK_MS:
        return ts_ms - (ts_ms - MONDAY_EPOCH_MS) % WEEK_MS
    return ts_ms - ts_ms % size


@dataclass(slots=True)
class Candle:
    """One bucket: OHLC in ticks, `volume_lots`, `quote_volume` (tick-lot units), trade count, seq range."""

    start_ms: int
    open: int
    high: int
    low: int
    close: int
    volume_lots: int
    quote_volume: int
    trades: int
    first_seq: int
    last_seq: int

    def add(self, price: int, qty: int, seq: int) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume_lots += qty
        self.quote_volume += price * qty
        self.trades += 1
        self.last_seq = seq

    def to_list(self) -> list[int]:
        return [self.start_ms, self.open, self.high, self.low, self.close, self.volume_lots, self.quote_volume,
                self.trades, self.first_seq, self.last_seq]

    @classmethod
    def from_list(cls, row: list[int]) -> Candle:
        return cls(*row)


class KlineAggregator:
    """The open candle of every interval; `add_trade` returns the candles it closed."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: dict[str, Candle] = {}

    def add_trade(self, price: int, qty: int, ts_ms: int, seq: int) -> list[tuple[str, Candle]]:
        closed: list[tuple[str, Candle]] = []
        for interval in INTERVALS_MS:
            start = bucket_start_ms(ts_ms, interval)
            cur = self.current.get(interval)
            if cur is not None and cur.start_ms == start:
                cur.add(price, qty, seq)
                continue
            if cur is not None and start < cur.start_ms:
                # out-of-order timestamp (intake clocks of two shards): count it in the open bucket
                cur.add(price, qty, seq)
                continue
            if cur is not None:
                closed.append((interval, cur))
            self.current[interval] = Candle(start, price, price, price, price, qty, price * qty, 1, seq, seq)
        return closed

    def dump(self) -> dict[str, list[int]]:
        return {interval: c.to_list() for interval, c in self.current.items()}

    @classmethod
    def load(cls, data: dict[str, list[int]]) -> KlineAggregator:
        agg = cls()
        agg.current = {interval: Candle.from_list(row) for interval, row in data.items()}
        return agg
