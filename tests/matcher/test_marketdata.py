"""The market-data consumer end to end: runner -> match:out -> depth, trades, K-lines (Redis + PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from matcher import keys
from matcher._aio import redis_client
from matcher.engine import Engine
from matcher.klines import INTERVALS_MS, bucket_start_ms
from matcher.marketdata import MarketDataConfig, MarketDataConsumer
from matcher.protocol import Command
from matcher.runner import MarketRunner, RunnerConfig
from tests.matcher.streams import sharded_flow, wait_caught_up, xadd_batches

M = "ETH-BTC"
T0 = 1_704_412_800_000  # 2024-01-05 00:00 UTC, a Friday: the flow crosses a week boundary


def _spread(cmds: list[Command], step_ms: int) -> list[Command]:
    return [dataclasses.replace(c, ts_ms=T0 + i * step_ms) for i, c in enumerate(cmds)]


async def _md_caught_up(r: Any, timeout_s: float = 60) -> None:
    """Until the market-data checkpoint reaches the engine's last seq."""
    want = await r.hget(keys.checkpoint(M), "seq")
    for _ in range(int(timeout_s / 0.02)):
        if await r.hget(keys.md_checkpoint(M), "seq") == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("market data did not catch up")


def _expected(cmds: list[Command]) -> tuple[Engine, list[dict[str, Any]]]:
    engine = Engine()
    rows: list[dict[str, Any]] = []
    for c in cmds:
        rows.extend(engine.apply_wire(c))
    return engine, rows


@pytest.mark.asyncio
async def test_depth_trades_klines_with_consumer_crash(redis_url: str, db_url: str) -> None:
    cmds = _spread(sharded_flow(8000, 77, shards=1), 37_000)  # ~3.4 days of trading
    batches = [cmds[i:i + 50] for i in range(0, len(cmds), 50)]
    # each component has its own client, as in production where they are separate processes
    r = aioredis.Redis.from_url(redis_url, socket_timeout=10)
    r_runner = redis_client(redis_url, 100)
    md_clients: list[Any] = []
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=3)
    stop = asyncio.Event()
    md_stop = asyncio.Event()
    cfg = MarketDataConfig(markets=(M,), redis_url=redis_url, database_url=db_url, depth_levels=20,
                           recent_trades=100, kline_buckets_kept=50, state_interval_s=0.0, batch=7)
    tasks: list[asyncio.Task[None]] = []

    def consumer(config: MarketDataConfig) -> MarketDataConsumer:
        client = redis_client(redis_url, 100)
        md_clients.append(client)
        return MarketDataConsumer(client, pool, M, config, md_stop)

    try:
        runner = asyncio.create_task(MarketRunner(r_runner, M, RunnerConfig((M,), redis_url, batch=20), stop).run())
        tasks.append(runner)
        first = consumer(cfg)
        md = asyncio.create_task(first.run())
        tasks.append(md)
        await xadd_batches(r, M, batches[:60])
        await wait_caught_up(r, M, task=runner)
        await _md_caught_up(r)
        # crash the consumer without a final state save, after state saves stop being frequent
        md.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(md, 10)
        saved_seq = int(await r.hget(keys.md_state(M), "seq") or 0)
        slow = dataclasses.replace(cfg, state_interval_s=3600)
        second = consumer(slow)
        md = asyncio.create_task(second.run())
        tasks.append(md)
        await xadd_batches(r, M, batches[60:120])
        await wait_caught_up(r, M, task=runner)
        await _md_caught_up(r)
        md.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(md, 10)
        third = consumer(slow)
        md = asyncio.create_task(third.run())
        tasks.append(md)
        await xadd_batches(r, M, batches[120:])
        await wait_caught_up(r, M, task=runner)
        await _md_caught_up(r)
        assert third.seq > saved_seq and second.seq > saved_seq
        md_stop.set()
        stop.set()
        await md
        await runner

        engine, rows = _expected(cmds)
        # depth snapshot = the engine's own book, top 20
        depth = await r.hgetall(keys.md_depth(M))
        assert json.loads(depth[b"bids"]) == [list(x) for x in engine.book.bids.depth(20)]
        assert json.loads(depth[b"asks"]) == [list(x) for x in engine.book.asks.depth(20)]
        last_depth_change = max(row["seq"] for row in rows if row["e"] in ("open", "trade")
                                or (row["e"] == "done" and row["remaining"] and row["reason"] != "rejected"))
        assert int(depth[b"u"]) >= last_depth_change
        # public trades: no self-trades, the last 100 by seq
        public = [row for row in rows if row["e"] == "trade" and row["taker_user"] != row["maker_user"]]
        assert len(public) < sum(row["e"] == "trade" for row in rows), "the flow has self-trades to exclude"
        members: list[bytes] = await r.zrange(keys.md_trades(M), 0, -1)  # type: ignore[assignment]
        stored = [json.loads(m) for m in members]
        assert [t["seq"] for t in stored] == [t["seq"] for t in public[-100:]]
        assert all(t["price"] == p["price"] and t["qty"] == p["qty"] for t, p in zip(stored, public[-100:],
                                                                                       strict=True))
        # K-lines: every closed bucket in PostgreSQL, the open one live in Redis, exact integers
        async with pool.acquire() as conn:
            db = {(row["interval"], row["bucket_start_ms"]): row for row in await conn.fetch(
                "SELECT * FROM klines WHERE market = $1", M)}
        for interval in INTERVALS_MS:
            groups: dict[int, list[dict[str, Any]]] = {}
            for t in public:
                groups.setdefault(bucket_start_ms(t["ts_ms"], interval), []).append(t)
            starts = sorted(groups)
            assert len(starts) >= 2 or interval == "1w", interval
            for start in starts[:-1]:
                g = groups[start]
                row = db.pop((interval, start))
                assert (row["open_ticks"], row["high_ticks"], row["low_ticks"], row["close_ticks"]) == (
                    g[0]["price"], max(t["price"] for t in g), min(t["price"] for t in g), g[-1]["price"])
                assert row["volume_lots"] == sum(t["qty"] for t in g)
                assert row["quote_volume"] == sum(t["price"] * t["qty"] for t in g)
                assert row["trades"] == len(g)
            live = json.loads(await r.hget(keys.md_kline(M, interval), str(starts[-1])) or b"null")
            g = groups[starts[-1]]
            assert live[:8] == [starts[-1], g[0]["price"], max(t["price"] for t in g), min(t["price"] for t in g),
                                g[-1]["price"], sum(t["qty"] for t in g), sum(t["price"] * t["qty"] for t in g),
                                len(g)]
            assert await r.hlen(keys.md_kline(M, interval)) <= 52
        assert not db, f"unexpected kline rows: {list(db)[:3]}"
        weeks = sorted({s for (iv, s) in [("1w", bucket_start_ms(t["ts_ms"], "1w")) for t in public]})
        assert weeks == [T0 - 4 * 86_400_000, T0 + 3 * 86_400_000]  # Mondays 2024-01-01 and 2024-01-08
    finally:
        stop.set()
        md_stop.set()
        for task in tasks:
            if not task.done():
                task.cancel()
        finished, _ = await asyncio.wait(tasks, timeout=10)
        for task in finished:
            if not task.cancelled():
                task.exception()  # retrieved: a failure already surfaced through the test body
        try:
            await asyncio.wait_for(pool.close(), 10)
        except TimeoutError:
            pool.terminate()
        for client in (r, r_runner, *md_clients):
            await client.aclose()
