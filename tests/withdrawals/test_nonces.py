"""The Ethereum nonce manager in PostgreSQL: seeded once from the node, then never reused or skipped,
across restarts (new connections) and under concurrent allocations; a nonce given back by an
abandoned draft is reused first."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ledger.withdrawals_proc.repo import allocate_nonce, give_back_nonce

ADDR = "0xAbCdEf0000000000000000000000000000000001"


async def _alloc(db_url: str, chain_nonce: int) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            return await allocate_nonce(conn, "regtest", ADDR, chain_nonce)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_nonces_survive_restarts_and_fill_gaps(db_url: str) -> None:
    assert [await _alloc(db_url, 5) for _ in range(3)] == [5, 6, 7]
    assert await _alloc(db_url, 2) == 8  # a "restart" (new connection) with a stale node count: the store rules
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await allocate_nonce(conn, "regtest", ADDR, 0) == 9
                raise RuntimeError("the draft's transaction fails: rolled back")
        assert await _alloc(db_url, 0) == 9  # the rolled-back allocation did not consume 9
        async with conn.transaction():
            await give_back_nonce(conn, "regtest", ADDR, 6)
    finally:
        await conn.close()
    assert await _alloc(db_url, 0) == 6  # the given-back nonce first
    got = await asyncio.gather(*(_alloc(db_url, 0) for _ in range(8)))
    assert sorted(got) == list(range(10, 18))
    conn = await asyncpg.connect(db_url)
    try:
        assert await conn.fetchval("SELECT next_nonce FROM wd_eth_nonces") == 18
        assert await conn.fetchval("SELECT count(*) FROM wd_eth_free_nonces") == 0
    finally:
        await conn.close()
