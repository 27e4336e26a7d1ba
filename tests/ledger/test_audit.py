"""The audit finds what the records do not explain: each tampering shows up in its check."""

from __future__ import annotations

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.audit import Difference, _audit, run_audit
from ledger.deposits import credit_deposit
from ledger.intake_protocol import PlaceOrderRequest
from tests.ledger.flow import Pipeline, add_market


@pytest.mark.asyncio
async def test_audit_catches_each_kind_of_tampering(db_url: str, redis_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    redis = Redis.from_url(redis_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) "
                               "ON CONFLICT DO NOTHING")
            m = await add_market(conn, min_notional=1)
            await conn.execute("INSERT INTO users (id) VALUES (31), (32)")
            await credit_deposit(conn, deposit_key="a31", user_id=31, asset="USDT", amount=10**8, txid="t",
                                 output_index=0)
            await credit_deposit(conn, deposit_key="a32", user_id=32, asset="BTC", amount=10**8, txid="t",
                                 output_index=1)
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()
        await flow.send(0, [PlaceOrderRequest("s", "", 32, m, "sell", "limit", "10", "0.005", None, 1),
                            PlaceOrderRequest("b", "", 31, m, "buy", "limit", "12", "0.002", None, 2),
                            PlaceOrderRequest("r", "", 31, m, "buy", "limit", "9", "0.004", None, 3)])
        await flow.drain()
        async with pool.acquire() as conn:
            assert await run_audit(conn) == []
            assert await conn.fetchval("SELECT count(*) FROM trades WHERE market=$1", m) == 1
            tamperings = [
                ("UPDATE trades SET buyer_fee = buyer_fee + 1 WHERE market = $1", {"trades", "assets"}),
                ("UPDATE orders SET frozen_remaining = frozen_remaining + 1 WHERE market = $1 AND state = 'open' "
                 "AND side = 'buy'", {"holds"}),
                ("UPDATE balances SET frozen = frozen + 7 WHERE user_id = 32 AND asset = 'BTC' AND $1 <> ''",
                 {"journal", "holds", "assets"}),
                # orders and settled command runs carry no foreign keys (migrations 0103, 0107): the audit checks
                ("UPDATE orders SET user_id = 999 WHERE market = $1 AND state = 'filled' AND side = 'buy'",
                 {"references"}),
                ("UPDATE settled_command_runs SET market = 'NO-SUCH' WHERE market = $1", {"references"}),
            ]
            for sql, expected in tamperings:
                tx = conn.transaction()
                await tx.start()
                await conn.execute(sql, m)
                found = {d.check for d in await _audit_in_tx(conn)}
                await tx.rollback()
                assert found == expected, (sql, found)
            assert await run_audit(conn) == []
    finally:
        await redis.aclose()
        await pool.close()


async def _audit_in_tx(conn: asyncpg.Connection) -> list[Difference]:
    return await _audit(conn)  # inside the test's own (to be rolled back) transaction
