"""`coffer ledger run` records the intake shard count and refuses to change it while an intake
stream still holds unconsumed requests (users map to shards by user_id % shards)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.errors import LedgerError
from ledger.intake_protocol import BATCH_FIELD, PlaceOrderRequest, encode_requests, intake_stream
from ledger.service import check_shard_count

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.asyncio
async def test_shard_count_changes_only_when_the_intake_streams_are_drained(db_url: str, redis_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    redis = Redis.from_url(redis_url)
    try:
        await conn.execute("DELETE FROM intake_config")
        await check_shard_count(conn, redis, 2)  # first start: recorded
        assert await conn.fetchval("SELECT shards FROM intake_config") == 2
        await check_shard_count(conn, redis, 2)  # same count: nothing to check
        await conn.execute("INSERT INTO intake_offsets (shard) VALUES (0), (1) ON CONFLICT DO NOTHING")
        await conn.execute("UPDATE intake_offsets SET stream_id = '0-0' WHERE shard IN (0, 1)")
        req = PlaceOrderRequest("x", "", 7, "BTC-USDT", "buy", "limit", "1", "1", None, 1)
        raw_id = await redis.xadd(intake_stream(1), {BATCH_FIELD: encode_requests([req])})
        entry = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        with pytest.raises(LedgerError, match=r"is 1 but the intake ran with 2 and intake\{1\} still holds"):
            await check_shard_count(conn, redis, 1)
        assert await conn.fetchval("SELECT shards FROM intake_config") == 2  # unchanged

        # the coffer CLI says so in one line and exits non-zero, before starting anything
        env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_REDIS_URL": redis_url,
               "COFFER_INTAKE_SHARDS": "1"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "coffer", "ledger", "run", "--roles", "intake", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode != 0
        assert err.decode().startswith("coffer: error: COFFER_INTAKE_SHARDS is 1 but the intake ran with 2")
        assert "Traceback" not in err.decode()

        # a database from before intake_config: the offsets tell that two shards were used
        await conn.execute("DELETE FROM intake_config")
        with pytest.raises(LedgerError, match="ran with 2"):
            await check_shard_count(conn, redis, 1)

        # once intake{1} is consumed up to its last entry the change goes through and is recorded
        await conn.execute("UPDATE intake_offsets SET stream_id = $1 WHERE shard = 1", entry)
        await check_shard_count(conn, redis, 1)
        assert await conn.fetchval("SELECT shards FROM intake_config") == 1
    finally:
        await redis.aclose()
        await conn.close()
