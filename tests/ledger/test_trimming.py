"""The consumers trim the streams they have committed: `intake{k}` behind the intake's offset,
`match:out{M}` behind both settlement's offset and the market-data consumer's (and not at all
without a market-data checkpoint). Nothing committed is processed again after a restart."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.deposits import credit_deposit
from ledger.intake import IntakeConsumer, stream_id_key
from ledger.intake_protocol import PlaceOrderRequest, intake_stream
from matcher import keys
from tests.ledger.flow import Pipeline, add_market


async def _setup(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) ON CONFLICT DO NOTHING")
        await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) ON CONFLICT DO NOTHING")
        m = await add_market(conn, min_notional=1)
        await conn.execute("INSERT INTO users (id) VALUES (81), (82) ON CONFLICT DO NOTHING")
        await credit_deposit(conn, deposit_key=f"{m}-81", user_id=81, asset="USDT", amount=10**12, txid="t",
                             output_index=0)
        await credit_deposit(conn, deposit_key=f"{m}-82", user_id=82, asset="BTC", amount=10**12, txid="t",
                             output_index=1)
    return m


@pytest.mark.asyncio
async def test_consumed_streams_are_trimmed_and_nothing_is_processed_twice(db_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=6)
    redis = Redis.from_url(redis_url)
    try:
        m = await _setup(pool)
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()
        intake, settlement = flow.intakes[0], flow.settlements[m]
        intake._trimmer.every_s = settlement._trimmer.every_s = 0.0  # trim at every chance
        # 300 entries of one request each (the API's shape), several stream nodes of 100 entries; drained
        # two by two, so the engine writes a match:out entry for each pair
        for i in range(300):
            side, user, price = ("sell", 82, "10") if i % 2 else ("buy", 81, "11")
            await flow.send(0, [PlaceOrderRequest(f"r{i}", "", user, m, side, "limit", price, "0.001", None, i)])
            if i % 2:
                await flow.drain()
        last: Any = await redis.xrevrange(intake_stream(0), count=1)
        assert await redis.xlen(intake_stream(0)) < 300 and last[0][0].decode() == intake.last_id
        out_len = await redis.xlen(keys.match_out(m))
        assert out_len >= 150 and settlement._trimmer.trims == 0  # no market-data checkpoint: match:out is kept

        # a market-data consumer that has read up to some entry: trimmed behind the slower of the two
        entries: Any = await redis.xrange(keys.match_out(m))
        md_at = entries[len(entries) // 2][0].decode()
        await redis.hset(keys.md_checkpoint(m), mapping={"out_id": md_at, "seq": 0})
        await flow.send(0, [PlaceOrderRequest("late", "", 81, m, "buy", "limit", "9", "0.001", None, 999)])
        await flow.drain()
        await settlement._trim()
        first: Any = await redis.xrange(keys.match_out(m), count=1)
        assert settlement._trimmer.trims >= 1 and await redis.xlen(keys.match_out(m)) < out_len
        # nothing the market-data consumer has not read is gone
        assert stream_id_key(first[0][0].decode()) <= stream_id_key(md_at)

        orders = await pool.fetchval("SELECT count(*) FROM orders WHERE market = $1", m)
        trades = await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m)
        again = IntakeConsumer(pool, redis, shard=0)  # a restart reads after its stored offset only
        await again.start()
        assert await again.step(block_ms=0) == 0
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE market = $1", m) == orders == 301
        assert trades == 150
    finally:
        await redis.aclose()
        await pool.close()
