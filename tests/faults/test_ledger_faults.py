"""Crash tests of the ledger's consumers.

1. kill -9 of an intake consumer between its commit and its forward: the restarted
   consumer re-sends the committed batch; the engine accepts each command once.
2. kill -9 of PostgreSQL while the consumers are busy: they recover by themselves.
3. kill -9 of Redis (appendfsync always, as production runs the money streams) while the
   consumers are busy: they reconnect and re-forward above the engine watermark.
After each: every request became at most one order, the engine accepted each order once,
each engine event was settled once (settlement's last seq = the engine's seq, one trade row
per trade event), no order is left pending, and the audit is clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import asyncpg
import pytest
from redis.asyncio import Redis

from coffer.localservices import PostgresServer, RedisServer
from ledger.audit import run_audit
from ledger.deposits import credit_deposit
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import PlaceOrderRequest, shard_for_user
from ledger.settlement import SettlementConsumer
from matcher import keys
from matcher.protocol import Trade, decode_events
from tests.harness import new_database, private_redis
from tests.ledger.flow import Pipeline, add_market
from tests.ledger.pump import EnginePump

ROOT = Path(__file__).resolve().parents[2]
USERS = list(range(9001, 9007))
SHARDS = 2


async def _seed(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) ON CONFLICT DO NOTHING")
        await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) ON CONFLICT DO NOTHING")
        m = await add_market(conn, min_notional=1)
        for u in USERS:
            await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", u)
            await credit_deposit(conn, deposit_key=f"{m}{u}b", user_id=u, asset="BTC", amount=10**9, txid="f",
                                 output_index=0)
            await credit_deposit(conn, deposit_key=f"{m}{u}u", user_id=u, asset="USDT", amount=10**9, txid="f",
                                 output_index=1)
    return m


def _orders(m: str, start: int, n: int) -> dict[int, list[Any]]:
    by_shard: dict[int, list[Any]] = {}
    for i in range(start, start + n):
        u = USERS[i % len(USERS)]
        side: Literal["buy", "sell"] = "buy" if (i // 3) % 2 else "sell"
        req = PlaceOrderRequest(f"o{i}", "", u, m, side, "limit", str(9 + i % 3), "0.01", None, i,
                                client_order_id=f"k{i}")
        by_shard.setdefault(shard_for_user(u, SHARDS), []).append(req)
    return by_shard


async def _check(pool: asyncpg.Pool, redis: Redis, m: str, pump: EnginePump, n_requests: int) -> None:
    orders = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1", m)
    assert 0 < orders <= n_requests
    assert await pool.fetchval("SELECT count(DISTINCT client_order_id) FROM orders WHERE market=$1", m) == orders
    assert pump.accepted == orders  # every accepted order reached the engine exactly once
    assert await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1 AND state='pending'", m) == 0
    assert await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m) == pump.engine.seq
    raw: Any = await redis.xrange(keys.match_out(m))
    # distinct seqs: an engine whose reply was lost re-writes the same events (same seqs)
    trade_events = len({e.seq for _id, f in raw for e in decode_events(f[b"b"]) if isinstance(e, Trade)})
    assert trade_events > 0
    assert await pool.fetchval("SELECT count(*) FROM trades WHERE market=$1", m) == trade_events
    async with pool.acquire() as conn:
        assert await run_audit(conn) == []


async def _settle_all(pool: asyncpg.Pool, redis: Redis, m: str, pump: EnginePump) -> None:
    settlement = SettlementConsumer(pool, redis, market=m)
    await settlement.start()
    await pump.drain()
    while await settlement.step(block_ms=0):
        pass
    await settlement.flush_events()


@pytest.mark.asyncio
@pytest.mark.slow
async def test_kill9_intake_between_commit_and_forward(db_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    redis = Redis.from_url(redis_url)
    try:
        m = await _seed(pool)
        flow = Pipeline(pool, redis, [m], shards=SHARDS)
        pump = EnginePump(redis, m)
        for shard, reqs in _orders(m, 0, 60).items():
            await flow.send(shard, reqs)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.ledger.crash_proc", db_url, redis_url, "0",
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        async with asyncio.timeout(60):
            assert await proc.wait() == -9  # killed itself after its commit, before forwarding
        committed = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1 AND shard=0", m)
        assert committed > 0
        assert await redis.exists(keys.match_in(m)) == 0  # nothing was forwarded
        for shard, reqs in _orders(m, 60, 30).items():
            await flow.send(shard, reqs)
        for k in range(SHARDS):
            c = IntakeConsumer(pool, redis, shard=k)
            await c.start()  # re-sends the last committed batch
            while await c.step(block_ms=0):
                pass
            await c.flush_events()
        # a second restart re-sends again: the engine must drop the duplicates
        c = IntakeConsumer(pool, redis, shard=0)
        await c.start()
        await _settle_all(pool, redis, m, pump)
        assert pump.dropped > 0
        await _check(pool, redis, m, pump, 90)
    finally:
        await redis.aclose()
        await pool.close()


class _TrackedIntake(IntakeConsumer):
    """An intake consumer that signals when it starts a batch's statements."""

    def __init__(self, *args: Any, entered: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = entered

    async def process(self, conn: asyncpg.Connection, requests: list[Any], last_id: str, **kwargs: Any) -> Any:
        self.entered.set()
        return await super().process(conn, requests, last_id, **kwargs)


async def _busy_run(pool: asyncpg.Pool, redis_url: str, m: str, crash: Any, n_batches: int = 30,
                    crash_every: int = 0) -> tuple[EnginePump, list[IntakeConsumer], SettlementConsumer, int]:
    """Consumers and the pump run as tasks while orders stream in; `crash()` runs mid-way, while
    an intake consumer is inside its batch transaction."""
    stop = asyncio.Event()
    redis = Redis.from_url(redis_url)
    pump_redis = Redis.from_url(redis_url)
    entered = asyncio.Event()
    intakes: list[IntakeConsumer] = [
        _TrackedIntake(pool, redis, shard=k, batch_size=200, block_ms=20, entered=entered) for k in range(SHARDS)]
    settlement = SettlementConsumer(pool, redis, market=m, batch_size=100, block_ms=20)
    pump = EnginePump(pump_redis, m)

    async def pump_loop() -> None:
        while not stop.is_set():
            try:
                if not await pump.step(block_ms=20):
                    await asyncio.sleep(0)
            except Exception:  # Redis down: the engine waits, its state is in memory
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(c.run(stop)) for c in intakes]
    tasks += [asyncio.create_task(settlement.run(stop)), asyncio.create_task(pump_loop())]
    sent = 0
    writer = Redis.from_url(redis_url)
    try:
        for b in range(n_batches):
            if (b == n_batches // 2) if not crash_every else (b % crash_every == crash_every - 1):
                # a burst, then the kill once an intake consumer is inside its transaction (cleared
                # before the burst: a fast consumer may take the whole burst while it is being sent)
                entered.clear()
                for shard, reqs in _orders(m, sent, 600).items():
                    await Pipeline(pool, writer, [m], shards=SHARDS).send(shard, reqs)
                sent += 600
                async with asyncio.timeout(30):
                    await entered.wait()
                await crash()
            for shard, reqs in _orders(m, sent, 40).items():
                for attempt in range(100):
                    try:
                        await Pipeline(pool, writer, [m], shards=SHARDS).send(shard, reqs)
                        break
                    except Exception:
                        if attempt == 99:
                            raise
                        await asyncio.sleep(0.1)
            sent += 40
            await asyncio.sleep(0.01)
        state: Any = None
        try:
            async with asyncio.timeout(60):
                while True:
                    await asyncio.sleep(0.2)
                    with contextlib.suppress(Exception):
                        pending = await pool.fetchval(
                            "SELECT count(*) FROM orders WHERE market=$1 AND state='pending'", m)
                        seq = await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m)
                        ends: Any = [await writer.xrevrange(f"intake{{{k}}}", count=1) for k in range(SHARDS)]
                        stored = {r["shard"]: r["stream_id"]
                                  for r in await pool.fetch("SELECT * FROM intake_offsets")}
                        caught_up = all(not e or stored.get(k) == e[0][0].decode() for k, e in enumerate(ends))
                        state = (pending, seq, pump.engine.seq, caught_up, pump.accepted, pump.dropped,
                                 [c.errors for c in intakes], settlement.errors)
                        if pending == 0 and seq == pump.engine.seq and caught_up:
                            break
        except TimeoutError:
            raise AssertionError(f"did not converge: pending, settled seq, engine seq, intake caught up, "
                                 f"accepted, dropped, intake errors, settlement errors = {state}") from None
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writer.aclose()
        await pump_redis.aclose()
        await redis.aclose()
    return pump, intakes, settlement, sent


@pytest.fixture
def always_redis() -> Iterator[RedisServer]:
    with private_redis(appendfsync="always") as server:
        yield server


@pytest.mark.asyncio
@pytest.mark.slow
async def test_kill9_postgres_mid_batch(fresh_postgres: PostgresServer, redis_url: str) -> None:
    db_url = await asyncio.to_thread(new_database, fresh_postgres, "pgkill")
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=8)
    try:
        m = await _seed(pool)

        async def crash() -> None:
            fresh_postgres.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(fresh_postgres.start)

        pump, intakes, settlement, sent = await _busy_run(pool, redis_url, m, crash)
        assert sum(c.errors for c in intakes) + settlement.errors > 0  # they did see the crash
        redis = Redis.from_url(redis_url)
        try:
            await _check(pool, redis, m, pump, sent)
        finally:
            await redis.aclose()
    finally:
        pool.terminate()


@pytest.mark.asyncio
@pytest.mark.slow
async def test_kill9_redis_mid_batch(always_redis: RedisServer, db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=8)
    try:
        m = await _seed(pool)

        async def crash() -> None:
            always_redis.kill()
            await asyncio.sleep(0.5)
            await asyncio.to_thread(always_redis.start)

        pump, intakes, settlement, sent = await _busy_run(pool, always_redis.url, m, crash)
        assert sum(c.errors for c in intakes) + settlement.errors > 0
        redis = Redis.from_url(always_redis.url)
        try:
            await _check(pool, redis, m, pump, sent)
        finally:
            await redis.aclose()
    finally:
        await pool.close()


@pytest.mark.asyncio
@pytest.mark.soak
async def test_soak_repeated_kill9_of_postgres_and_redis(fresh_postgres: PostgresServer,
                                                         always_redis: RedisServer) -> None:
    """Soak: PostgreSQL and Redis killed in turn every 25 batches over 300 batches."""
    db_url = await asyncio.to_thread(new_database, fresh_postgres, "soak")
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=8)
    try:
        m = await _seed(pool)
        turn = 0

        async def crash() -> None:
            nonlocal turn
            server: Any = fresh_postgres if turn % 2 == 0 else always_redis
            turn += 1
            server.kill()
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.start)

        pump, _intakes, _settlement, sent = await _busy_run(pool, always_redis.url, m, crash, n_batches=300,
                                                            crash_every=25)
        assert turn == 12
        redis = Redis.from_url(always_redis.url)
        try:
            await _check(pool, redis, m, pump, sent)
        finally:
            await redis.aclose()
    finally:
        pool.terminate()
