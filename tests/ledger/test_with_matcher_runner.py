"""End to end with the matcher's real stream runner (matcher.runner.MarketRunner) instead of
the test pump: intake consumers, the runner and the settlement consumer run as tasks while
orders, cancels and market orders stream in; the runner is stopped and a new one takes over
half-way (lease, snapshot/replay recovery). At the end every order is settled or resting,
settlement has applied exactly the engine's sequence, and the audit is clean."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.audit import run_audit
from ledger.deposits import credit_deposit
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import CancelAllRequest, PlaceOrderRequest, Request, shard_for_user
from ledger.settlement import SettlementConsumer
from matcher import keys
from matcher.runner import MarketRunner, RunnerConfig
from tests.ledger.flow import Pipeline, add_market

USERS = list(range(8101, 8107))
SHARDS = 2


@pytest.mark.asyncio
@pytest.mark.slow
async def test_ledger_with_the_real_matcher_runner(db_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=4, max_size=8)
    redis = Redis.from_url(redis_url)
    runner_redis = Redis.from_url(redis_url)
    rng = random.Random(11)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            m = await add_market(conn, min_notional=1)
            for u in USERS:
                await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", u)
                for k, a in enumerate(("BTC", "USDT")):
                    await credit_deposit(conn, deposit_key=f"{m}{u}{a}", user_id=u, asset=a, amount=10**9,
                                         txid="f", output_index=k)
        stop = asyncio.Event()
        runner_stop = asyncio.Event()
        config = RunnerConfig(markets=(m,), redis_url=redis_url, snapshot_interval_s=0.2, lease_ms=1000,
                              block_ms=20)
        runner_task = asyncio.create_task(MarketRunner(runner_redis, m, config, runner_stop).run())
        intakes = [IntakeConsumer(pool, redis, shard=k, batch_size=100, block_ms=20) for k in range(SHARDS)]
        settlement = SettlementConsumer(pool, redis, market=m, batch_size=20, block_ms=20)
        tasks = [asyncio.create_task(c.run(stop)) for c in intakes] + [asyncio.create_task(settlement.run(stop))]
        flow = Pipeline(pool, redis, [m], shards=SHARDS)
        n = 0
        for batch in range(30):
            if batch == 15:  # the runner stops; a new one takes the lease and recovers
                runner_stop.set()
                await runner_task
                runner_stop = asyncio.Event()
                runner_task = asyncio.create_task(MarketRunner(runner_redis, m, config, runner_stop).run())
            by_shard: dict[int, list[Request]] = {}
            for _ in range(rng.randint(3, 15)):
                u = rng.choice(USERS)
                roll = rng.random()
                req: Request
                if roll < 0.75:
                    req = PlaceOrderRequest(f"x{n}", "", u, m, rng.choice(["buy", "sell"]), "limit",
                                            str(rng.randint(9, 11)), f"0.00{rng.randint(1, 9)}", None, n)
                elif roll < 0.85:
                    req = PlaceOrderRequest(f"x{n}", "", u, m, "buy", "market", None, None, "0.05", n, tif="IOC")
                elif roll < 0.95:
                    req = PlaceOrderRequest(f"x{n}", "", u, m, "sell", "market", None, "0.004", None, n, tif="IOC")
                else:
                    req = CancelAllRequest(f"x{n}", "", u, n, market=m)
                by_shard.setdefault(shard_for_user(u, SHARDS), []).append(req)
                n += 1
            for shard, reqs in by_shard.items():
                await flow.send(shard, reqs)
            await asyncio.sleep(0.01)
        async with asyncio.timeout(60):
            while True:
                await asyncio.sleep(0.1)
                pending = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1 AND state='pending'", m)
                applied = await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m)
                raw: Any = await redis.hget(keys.checkpoint(m), "seq")
                ends: Any = [await redis.xrevrange(f"intake{{{k}}}", count=1) for k in range(SHARDS)]
                stored = {r["shard"]: r["stream_id"] for r in await pool.fetch("SELECT * FROM intake_offsets")}
                caught_up = all(not e or stored.get(k) == e[0][0].decode() for k, e in enumerate(ends))
                if caught_up and pending == 0 and raw is not None and applied == int(raw):
                    break
        stop.set()
        runner_stop.set()
        await asyncio.gather(*tasks, runner_task)
        assert [c.errors for c in intakes] == [0] * SHARDS and settlement.errors == 0
        assert await pool.fetchval("SELECT count(*) FROM trades WHERE market=$1", m) > 10
        states = {r["state"] for r in await pool.fetch("SELECT DISTINCT state FROM orders WHERE market=$1", m)}
        assert "pending" not in states and "filled" in states
        async with pool.acquire() as conn:
            assert await run_audit(conn) == []
    finally:
        await runner_redis.aclose()
        await redis.aclose()
        await pool.close()
