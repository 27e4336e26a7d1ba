"""The unlocked-read + guarded-upsert pair (the intake reads balances without a lock, then
upsert_journal_and(guard=True)) against a real PostgreSQL: a deposit reversal committed between
the read and the upsert makes the guarded upsert refuse, and nothing of the statement stays, in a
transaction block or on its own."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.demo import seed_demo
from ledger.deposits import credit_deposit, reverse_deposit
from ledger.errors import BalanceMovedError
from ledger.repo import upsert_journal_and


async def _balance(conn: asyncpg.Connection, user: int, asset: str, *, lock: bool) -> list[int]:
    row = await conn.fetchrow("SELECT available, frozen FROM balances WHERE user_id = $1 AND asset = $2"
                              + (" FOR UPDATE" if lock else ""), user, asset)
    assert row is not None
    return [int(row["available"]), int(row["frozen"])]


@pytest.mark.asyncio
async def test_guarded_upsert_refuses_when_a_reversal_lowered_the_balance(db_url: str) -> None:
    a = await asyncpg.connect(db_url)
    b = await asyncpg.connect(db_url)
    try:
        async with a.transaction():
            await seed_demo(a, network="regtest", usdt_contract=None)
            await a.execute("INSERT INTO users (id) VALUES (61) ON CONFLICT DO NOTHING")
            await credit_deposit(a, deposit_key="g61a", user_id=61, asset="USDT", amount=1_000, txid="t",
                                 output_index=0)
            await credit_deposit(a, deposit_key="g61b", user_id=61, asset="USDT", amount=500, txid="t", output_index=1)
        journal_before = await a.fetchval("SELECT count(*) FROM balance_journal")

        # a consumer reads without a lock and decides to freeze 1,200 of the 1,500 it saw ...
        tx = a.transaction()
        await tx.start()
        assert await _balance(a, 61, "USDT", lock=False) == [1_500, 0]
        # ... meanwhile the 500 deposit is reversed (it does not wait: nothing is locked) ...
        async with b.transaction():
            await reverse_deposit(b, deposit_key="g61b", reason="reorg")
        # ... so its guarded upsert refuses instead of taking available below zero
        with pytest.raises(BalanceMovedError, match="available balance of user 61 in USDT fell"):
            await upsert_journal_and(a, {(61, "USDT"): [-1_200, 1_200]}, "intake", 1, guard=True)
        await tx.rollback()
        assert await a.fetchval("SELECT available FROM balances WHERE user_id = 61 AND asset = 'USDT'") == 1_000
        assert await a.fetchval("SELECT count(*) FROM balance_journal") == journal_before + 1  # the reversal only

        # the same statement on its own (no transaction block, as the intake writes a small batch):
        # the refusal is raised inside it, so none of its CTEs is written either
        with pytest.raises(BalanceMovedError, match="available balance of user 61 in USDT fell"):
            await upsert_journal_and(a, {(61, "USDT"): [-1_200, 1_200]}, "intake", 1, guard=True,
                                     also=("INSERT INTO users (id) VALUES ($5)",), also_args=(62,))
        assert await a.fetchval("SELECT available FROM balances WHERE user_id = 61 AND asset = 'USDT'") == 1_000
        assert await a.fetchval("SELECT count(*) FROM balance_journal") == journal_before + 1
        assert await a.fetchval("SELECT count(*) FROM users WHERE id = 62") == 0

        # on locked rows the same batch is decided on what is there; a freeze that fits passes the guard,
        # and a credit (positive delta) always does
        async with a.transaction():
            assert await _balance(a, 61, "USDT", lock=True) == [1_000, 0]
            rows = await upsert_journal_and(a, {(61, "USDT"): [-900, 900], (61, "BTC"): [5, 0]}, "intake", 2,
                                            guard=True)
        assert sorted(rows) == [(61, "BTC", 5, 0), (61, "USDT", 100, 900)]
    finally:
        await a.close()
        await b.close()
