"""credit_deposit / reverse_deposit / seed_demo against a real migrated PostgreSQL."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.demo import DEMO_MARKETS, seed_demo
from ledger.deposits import credit_deposit, reverse_deposit
from ledger.errors import InvalidAmountError, UnknownAssetError, UnknownDepositError, UnknownUserError


async def _balance(conn: asyncpg.Connection, user: int, asset: str) -> tuple[int, int]:
    row = await conn.fetchrow("SELECT available, frozen FROM balances WHERE user_id=$1 AND asset=$2", user, asset)
    return (0, 0) if row is None else (row["available"], row["frozen"])


@pytest.mark.asyncio
async def test_seed_demo_is_idempotent_and_fills_contract(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract=None)
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract="0xAbC0000000000000000000000000000000000001")
        rows = await conn.fetch("SELECT code, token_contract, ledger_decimals FROM assets ORDER BY code")
        assert [(r["code"], r["ledger_decimals"]) for r in rows] == [("BTC", 8), ("ETH", 9), ("USDT", 6)]
        assert rows[2]["token_contract"] == "0xabc0000000000000000000000000000000000001"
        markets = await conn.fetch("SELECT symbol FROM markets ORDER BY symbol")
        assert sorted(r["symbol"] for r in markets) == sorted(m[0] for m in DEMO_MARKETS)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_credit_is_idempotent_and_reversal_may_go_negative(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract=None)
            await conn.execute("INSERT INTO users (id) VALUES (501) ON CONFLICT DO NOTHING")
        async with conn.transaction():
            assert await credit_deposit(conn, deposit_key="btc:aa:0", user_id=501, asset="BTC", amount=70_000,
                                        txid="aa", output_index=0)
        async with conn.transaction():
            assert not await credit_deposit(conn, deposit_key="btc:aa:0", user_id=501, asset="BTC", amount=70_000,
                                            txid="aa", output_index=0)
        assert await _balance(conn, 501, "BTC") == (70_000, 0)
        # spend part of it, then the deposit is reversed: available goes negative
        await conn.execute("UPDATE balances SET available = available - 50000 WHERE user_id=501 AND asset='BTC'")
        async with conn.transaction():
            assert await reverse_deposit(conn, deposit_key="btc:aa:0", reason="reorg depth 7")
        async with conn.transaction():
            assert not await reverse_deposit(conn, deposit_key="btc:aa:0", reason="again")
        assert await _balance(conn, 501, "BTC") == (-50_000, 0)
        # the caller's rollback undoes a credit
        tx = conn.transaction()
        await tx.start()
        assert await credit_deposit(conn, deposit_key="btc:bb:1", user_id=501, asset="BTC", amount=5,
                                    txid="bb", output_index=1)
        await tx.rollback()
        assert await conn.fetchval("SELECT count(*) FROM deposits WHERE deposit_key='btc:bb:1'") == 0
        with pytest.raises(UnknownUserError):
            await credit_deposit(conn, deposit_key="k", user_id=999, asset="BTC", amount=1, txid="t", output_index=0)
        with pytest.raises(UnknownAssetError):
            await credit_deposit(conn, deposit_key="k", user_id=501, asset="DOGE", amount=1, txid="t", output_index=0)
        with pytest.raises(InvalidAmountError):
            await credit_deposit(conn, deposit_key="k", user_id=501, asset="BTC", amount=0, txid="t", output_index=0)
        with pytest.raises(UnknownDepositError):
            await reverse_deposit(conn, deposit_key="nope", reason="x")
    finally:
        await conn.close()
