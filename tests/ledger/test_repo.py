"""The unlocked-read + guarded-upsert pair (the intake reads balances without a lock, then
upsert_journal_and(guard=True)) against a real PostgreSQL: a deposit reversal committed between
the read and the upsert makes the guarded upsert refuse, and nothing of the statement stays, in a
transaction block or on its own."""

from __future__ import annotations

import asyncio

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


Net = dict[tuple[int, str], list[int]]


@pytest.mark.parametrize("net", [{(63, "USDT"): [5, 0]}, {}], ids=["with-balances", "also-only"])
@pytest.mark.asyncio
async def test_a_statement_with_first_changes_nothing_until_it_holds_the_lock(db_url: str, net: Net) -> None:
    """`first`: the statement waits for the lock before it changes any row (neither the balance
    nor an `also` statement's row), then reads the row as the transaction it waited for left it."""
    a, b, c = [await asyncpg.connect(db_url) for _ in range(3)]
    try:
        await seed_demo(a, network="regtest", usdt_contract=None)
        await a.execute("INSERT INTO users (id) VALUES (63), (64) ON CONFLICT DO NOTHING")
        await credit_deposit(a, deposit_key="f63", user_id=63, asset="USDT", amount=100, txid="t", output_index=0)
        await a.execute("CREATE TABLE IF NOT EXISTS first_gate (k int PRIMARY KEY, v int);"
                        "DELETE FROM first_gate; INSERT INTO first_gate VALUES (1, 0), (2, 0)")
        before = await a.fetchval("SELECT available FROM balances WHERE user_id = 63 AND asset = 'USDT'")
        holder = a.transaction()
        await holder.start()
        await a.execute("UPDATE first_gate SET v = 7 WHERE k = 1")  # the batch before, not yet committed
        write = asyncio.ensure_future(upsert_journal_and(
            b, net, "settle", 1, also=("UPDATE first_gate SET v = v + 1 WHERE k = 2",), also_args=(7,),
            first=("SELECT v FROM first_gate WHERE k = 1 FOR UPDATE",
                   "(SELECT CASE WHEN v = $5 THEN true ELSE ledger_refuse('CF003', 'gate') = 0 END FROM lk)")))
        await asyncio.sleep(0.3)
        assert not write.done()  # waiting for the lock
        async with c.transaction():  # nothing it would change is locked by it yet
            await c.execute("SELECT 1 FROM first_gate WHERE k = 2 FOR UPDATE NOWAIT")
            await c.execute("SELECT 1 FROM balances WHERE user_id = 63 AND asset = 'USDT' FOR UPDATE NOWAIT")
        await holder.commit()  # the gate reads 7, the committed value
        await asyncio.wait_for(write, 10)
        assert await c.fetchval("SELECT v FROM first_gate WHERE k = 2") == 1
        assert await c.fetchval("SELECT available FROM balances WHERE user_id = 63 AND asset = 'USDT'") == (
            before + (5 if net else 0))
    finally:
        for conn in (a, b, c):
            await conn.close()
