"""The market-data consumer: depth, recent public trades and K-lines computed from `match:out{M}`.

`coffer matcher marketdata --market M` runs one `MarketDataConsumer` per market. Each batch of
`match:out` entries is folded into a `DepthBook` and a `KlineAggregator` (self-trades are kept
out of public trades and K-lines), then: candles closed by the batch are upserted into the
PostgreSQL `klines` table first (idempotent, keyed by market, interval and bucket start), and
then one MULTI/EXEC writes the depth snapshot (top N levels with its update id), the recent
trades, the live candles (hashes keyed by bucket start), the consumer's offset (`md:ckpt{M}`)
and, every `state_interval_s`, its whole state with that offset (`md:state{M}`); the
publications (depth diffs, trades, candles) go in the same transaction. Key names and payloads
are documented in `matcher.keys`.

Restart: load `md:state{M}` and re-read `match:out` after its offset; events whose seq is not
above the state's seq are skipped, and everything re-written is idempotent (same values, ZADD
by seq, upserts), so a crash anywhere neither loses nor doubles a trade or a volume. Diffs may
be published twice after a restart; clients drop diffs whose `u` they already have. Run one
consumer per market (it holds no lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack

from matcher import keys
from matcher._aio import raise_if_cancelling, redis_client, serve_until_signalled, sleep_or_stop
from matcher.depth import DepthBook
from matcher.errors import MatcherError
from matcher.klines import INTERVALS_MS, Candle, KlineAggregator

log = logging.getLogger("matcher.marketdata")

UPSERT_KLINE = """
INSERT INTO klines (market, interval, bucket_start_ms, open_ticks, high_ticks, low_ticks, close_ticks,
                    volume_lots, quote_volume, trades, first_seq, last_seq)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (market, interval, bucket_start_ms) DO UPDATE SET
    open_ticks = EXCLUDED.open_ticks, high_ticks = EXCLUDED.high_ticks, low_ticks = EXCLUDED.low_ticks,
    close_ticks = EXCLUDED.close_ticks, volume_lots = EXCLUDED.volume_lots,
    quote_volume = EXCLUDED.quote_volume, trades = EXCLUDED.trades,
    first_seq = EXCLUDED.first_seq, last_seq = EXCLUDED.last_seq
"""


@dataclass(frozen=True, slots=True)
class MarketDataConfig:
    markets: tuple[str, ...]
    redis_url: str
    database_url: str
    depth_levels: int = 50
    recent_trades: int = 500
    kline_buckets_kept: int = 1000
    state_interval_s: float = 5.0
    batch: int = 200
    block_ms: int = 100
    retry_delay_s: float = 0.2


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class MarketDataConsumer:
    def __init__(self, redis: Any, pool: Any, market: str, config: MarketDataConfig, stop: asyncio.Event) -> None:
        self.r = redis
        self.pool = pool
        self.market = market
        self.config = config
        self.stop = stop
        self.depth = DepthBook()
        self.klines = KlineAggregator()
        self.out_id = "0-0"
        self.depth_u = 0
        self.seq = 0
        self.batches = 0

    async def load(self) -> None:
        """Start from the saved state (or from scratch when there is none)."""
        saved = await self.r.hgetall(keys.md_state(self.market))
        self.depth, self.klines, self.out_id, self.depth_u, self.seq = DepthBook(), KlineAggregator(), "0-0", 0, 0
        if saved:
            state = msgpack.unpackb(saved[b"state"], raw=False, strict_map_key=False)
            self.depth = DepthBook.load(state["depth"])
            self.klines = KlineAggregator.load(state["klines"])
            self.depth_u = int(state["depth_u"])
            self.seq = int(state["seq"])
            self.out_id = saved[b"out_id"].decode()
        log.info("%s: market data from seq %d (match:out after %s)", self.market, self.seq, self.out_id)

    def _state(self) -> bytes:
        data = {"depth": self.depth.dump(), "klines": self.klines.dump(), "depth_u": self.depth_u, "seq": self.seq}
        return msgpack.packb(data, use_bin_type=True)  # type: ignore[no-any-return]

    def fold(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, Candle]]]:
        """Apply new events (seq above ours); returns the public trades and the candles they closed."""
        public: list[dict[str, Any]] = []
        closed: list[tuple[str, Candle]] = []
        for row in rows:
            if row["seq"] <= self.seq:
                continue
            if row["seq"] != self.seq + 1:
                raise MatcherError(f"{self.market}: match:out jumps from seq {self.seq} to {row['seq']}")
            self.depth.apply(row)
            self.seq = row["seq"]
            if row["e"] == "trade" and row["taker_user"] != row["maker_user"]:
                public.append({"seq": row["seq"], "price": row["price"], "qty": row["qty"],
                               "taker_side": row["taker_side"], "ts_ms": row["ts_ms"]})
                closed.extend(self.klines.add_trade(row["price"], row["qty"], row["ts_ms"], row["seq"]))
        return public, closed

    async def _persist_closed(self, closed: list[tuple[str, Candle]]) -> None:
        if not closed:
            return
        args = [(self.market, interval, c.start_ms, c.open, c.high, c.low, c.close, c.volume_lots,
                 Decimal(c.quote_volume), c.trades, c.first_seq, c.last_seq) for interval, c in closed]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(UPSERT_KLINE, args)

    def _cutoff(self, interval: str) -> int:
        """Buckets starting before this are dropped from the Redis hash of `interval`."""
        return self.klines.current[interval].start_ms - self.config.kline_buckets_kept * INTERVALS_MS[interval]

    async def _old_buckets(self, closed: list[tuple[str, Candle]]) -> dict[str, list[bytes]]:
        """Fields of kline hashes older than the kept window (checked only when a bucket closes)."""
        out: dict[str, list[bytes]] = {}
        for interval in {iv for iv, _ in closed}:
            cutoff = self._cutoff(interval)
            fields = await self.r.hkeys(keys.md_kline(self.market, interval))
            old = [f for f in fields if int(f) < cutoff]
            if old:
                out[interval] = old
        return out

    async def handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]], force_state: bool) -> None:
        rows: list[dict[str, Any]] = []
        for _entry_id, fields in entries:
            rows.extend(msgpack.unpackb(fields[b"b"], raw=False))
        first_new = self.seq + 1
        public, closed = self.fold(rows)
        new_out_id = entries[-1][0].decode()
        await self._persist_closed(closed)
        old = await self._old_buckets(closed)
        m = self.market
        pipe = self.r.pipeline(transaction=True)
        bid_changes, ask_changes = self.depth.take_changes()
        if bid_changes or ask_changes:
            bids, asks = self.depth.top(self.config.depth_levels)
            pipe.hset(keys.md_depth(m), mapping={"u": self.seq, "bids": _dumps(bids), "asks": _dumps(asks)})
            pipe.publish(keys.md_depth_channel(m),
                         _dumps({"U": self.depth_u + 1, "u": self.seq, "bids": bid_changes, "asks": ask_changes}))
            self.depth_u = self.seq
        if public:
            pipe.zadd(keys.md_trades(m), {_dumps(t): t["seq"] for t in public})
            pipe.zremrangebyrank(keys.md_trades(m), 0, -self.config.recent_trades - 1)
            pipe.publish(keys.md_trades_channel(m), _dumps(public))
            for interval, candle in closed:
                if candle.start_ms >= self._cutoff(interval):  # older ones live in PostgreSQL only
                    pipe.hset(keys.md_kline(m, interval), str(candle.start_ms), _dumps(candle.to_list()))
            for interval, candle in self.klines.current.items():
                if candle.last_seq >= first_new:
                    pipe.hset(keys.md_kline(m, interval), str(candle.start_ms), _dumps(candle.to_list()))
                    pipe.publish(keys.md_kline_channel(m), _dumps({"interval": interval, "k": candle.to_list()}))
            for interval, stale in old.items():
                pipe.hdel(keys.md_kline(m, interval), *stale)
        pipe.hset(keys.md_checkpoint(m), mapping={"out_id": new_out_id, "seq": self.seq})
        if force_state:
            pipe.hset(keys.md_state(m), mapping={"state": self._state(), "out_id": new_out_id, "seq": self.seq})
        await pipe.execute()
        self.out_id = new_out_id
        self.batches += 1

    async def run(self) -> None:
        import redis.exceptions as rexc

        loaded = False
        last_state = time.monotonic()
        while not self.stop.is_set():
            raise_if_cancelling()
            try:
                if not loaded:
                    await self.load()
                    loaded = True
                reply = await self.r.xread({keys.match_out(self.market): self.out_id}, count=self.config.batch,
                                           block=self.config.block_ms)
                if not reply:
                    continue
                now = time.monotonic()
                save = now - last_state >= self.config.state_interval_s
                await self.handle(reply[0][1], save)
                if save:
                    last_state = now
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError) as exc:
                raise_if_cancelling()
                log.warning("%s: Redis unavailable (%s); reloading state", self.market, exc)
                loaded = False
                await sleep_or_stop(self.stop, self.config.retry_delay_s)
        if loaded and self.batches:
            with contextlib.suppress(rexc.ConnectionError, rexc.TimeoutError, OSError):
                await self.r.hset(keys.md_state(self.market),
                                  mapping={"state": self._state(), "out_id": self.out_id, "seq": self.seq})



async def run_markets(config: MarketDataConfig, stop: asyncio.Event) -> None:
    import asyncpg

    client = redis_client(config.redis_url, config.block_ms)
    pool = await asyncpg.create_pool(config.database_url, min_size=1, max_size=2)
    try:
        async with asyncio.TaskGroup() as tg:
            for market in config.markets:
                tg.create_task(MarketDataConsumer(client, pool, market, config, stop).run())
    finally:
        await pool.close()
        await client.aclose()


def serve(config: MarketDataConfig) -> int:
    """Entry point of `coffer matcher marketdata`: runs until SIGTERM/SIGINT, then exits 0."""
    return serve_until_signalled(config.markets, lambda stop: run_markets(config, stop))
