"""Intake, settlement and deposit credits running at the same time on the same few users.

Two intake consumers, the engine pump and the settlement consumer run as tasks, each on its
own pooled connection, while a writer streams orders in batches and two depositors credit
(and reverse) deposits of the same users in their own transactions. At the end: no
consumer ever failed (a deadlock or serialization error would be counted), the depositors
never raised, every balance equals its journal and the per-asset audit is clean (a lost
update would break one of those), and every order reached a settled state.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.audit import run_audit
from ledger.deposits import credit_deposit, reverse_deposit
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import PlaceOrderRequest, shard_for_user
from ledger.settlement import SettlementConsumer
from tests.ledger.flow import Pipeline, add_market
from tests.ledger.pump import EnginePump

USERS = list(range(7001, 7009))
SHARDS = 2


@pytest.mark.asyncio
@pytest.mark.slow
async def test_intake_settlement_and_deposits_concurrently(db_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=6, max_size=10)
    redis = Redis.from_url(redis_url)
    rng = random.Random(7)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            m = await add_market(conn, min_notional=1)
            for u in USERS:
                await conn.execute("INSERT INTO users (id) VALUES ($1)", u)
                await credit_deposit(conn, deposit_key=f"c{u}b", user_id=u, asset="BTC", amount=50_000_000,
                                     txid="f", output_index=0)
                await credit_deposit(conn, deposit_key=f"c{u}u", user_id=u, asset="USDT", amount=5_000_000,
                                     txid="f", output_index=1)
        stop = asyncio.Event()
        intakes = [IntakeConsumer(pool, redis, shard=k, batch_size=300, block_ms=20) for k in range(SHARDS)]
        settlement = SettlementConsumer(pool, redis, market=m, batch_size=50, block_ms=20)
        pump = EnginePump(redis, m)

        async def pump_loop() -> None:
            while not stop.is_set():
                if not await pump.step(block_ms=20):
                    await asyncio.sleep(0)

        tasks = [asyncio.create_task(c.run(stop)) for c in intakes]
        tasks.append(asyncio.create_task(settlement.run(stop)))
        tasks.append(asyncio.create_task(pump_loop()))
        flow = Pipeline(pool, redis, [m], shards=SHARDS)

        n_orders = 0

        async def writer() -> None:
            nonlocal n_orders
            for batch in range(40):
                by_shard: dict[int, list[PlaceOrderRequest]] = {}
                for _ in range(rng.randint(1, 25)):
                    u = rng.choice(USERS)
                    side = rng.choice(["buy", "sell"])
                    req = PlaceOrderRequest(f"w{n_orders}", "", u, m, side, "limit",  # type: ignore[arg-type]
                                            str(rng.randint(9, 11)), f"0.{rng.randint(1, 20):03d}", None, batch,
                                            tif=rng.choice(["GTC", "GTC", "IOC"]))
                    by_shard.setdefault(shard_for_user(u, SHARDS), []).append(req)  # type: ignore[arg-type]
                    n_orders += 1
                for shard, reqs in by_shard.items():
                    await flow.send(shard, reqs)  # type: ignore[arg-type]
                await asyncio.sleep(0.005)

        async def depositor(tag: str) -> int:
            done = 0
            for i in range(60):
                u = rng.choice(USERS)
                async with pool.acquire() as conn, conn.transaction():
                    await credit_deposit(conn, deposit_key=f"{tag}{i}", user_id=u, asset=rng.choice(["BTC", "USDT"]),
                                         amount=rng.randint(1, 10_000), txid=tag, output_index=i)
                if i % 7 == 3:
                    async with pool.acquire() as conn, conn.transaction():
                        await reverse_deposit(conn, deposit_key=f"{tag}{i - 1}", reason="reorg")
                done += 1
                await asyncio.sleep(0.002)
            return done

        results = await asyncio.gather(writer(), depositor("d1-"), depositor("d2-"))
        assert list(results[1:]) == [60, 60]
        async with asyncio.timeout(90):
            while True:
                await asyncio.sleep(0.1)
                pending = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1 AND state='pending'", m)
                placed = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1", m)
                applied = await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m)
                offsets = await pool.fetchval("SELECT sum(last_iid) FROM intake_offsets")
                if pending == 0 and applied == pump.engine.seq and offsets >= placed and placed > 0:
                    stream_ends: list[Any] = [await redis.xrevrange(f"intake{{{k}}}", count=1) for k in range(SHARDS)]
                    stored = {r["shard"]: r["stream_id"] for r in await pool.fetch("SELECT * FROM intake_offsets")}
                    if all(not e or stored.get(k) == e[0][0].decode() for k, e in enumerate(stream_ends)):
                        break
        stop.set()
        await asyncio.gather(*tasks)
        assert [c.errors for c in intakes] == [0] * SHARDS and settlement.errors == 0
        trades = await pool.fetchval("SELECT count(*) FROM trades WHERE market=$1", m)
        assert trades > 20
        accepted = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1", m)
        assert 0 < accepted <= n_orders
        async with pool.acquire() as conn:
            assert await run_audit(conn) == []
    finally:
        await redis.aclose()
        await pool.close()
