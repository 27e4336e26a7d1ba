"""AddressBook: incremental owner look-up from deposit_addresses on the real PostgreSQL fixture."""

from __future__ import annotations

import asyncpg
import pytest

from tests.wallet.dbhelp import ensure_users
from wallet.addressbook import AddressBook

INSERT = """
INSERT INTO deposit_addresses (user_id, asset, chain, network, address, derivation_path, address_index, is_current)
VALUES ($1, $2, $3, $4, $5, $6, $7, true)
"""


@pytest.mark.asyncio
async def test_refresh_incremental_and_case_insensitive(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("DELETE FROM deposit_addresses")
        await ensure_users(conn, [1, 2, 3])
        eth_addr = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        await conn.execute(INSERT, 1, "ETH", "eth", "regtest", eth_addr, "m/44'/60'/0'/0/0", 0)
        await conn.execute(INSERT, 2, "BTC", "btc", "regtest", "bcrt1qexample0", "m/84'/1'/0'/0/0", 0)
        book = AddressBook("eth", "regtest")
        assert await book.refresh(conn) == 1
        assert book.owner(eth_addr) == 1
        assert book.owner(eth_addr.lower()) == 1
        assert eth_addr.upper().replace("0X", "0x") in book
        assert book.owner("bcrt1qexample0") is None  # another chain
        assert await book.refresh(conn) == 0
        await conn.execute(
            INSERT, 3, "USDT", "eth", "regtest", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", "m/44'/60'/0'/0/1", 1
        )
        assert await book.refresh(conn) == 1
        assert len(book) == 2
        assert book.owner("0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359") == 3
        assert book.owner("0x0000000000000000000000000000000000000001") is None
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_refresh_sees_row_committed_after_a_later_id(db_url: str) -> None:
    """A transaction that took a lower id but commits late must still be loaded."""
    slow = await asyncpg.connect(db_url)
    fast = await asyncpg.connect(db_url)
    reader = await asyncpg.connect(db_url)
    try:
        await ensure_users(fast, [10, 11])
        book = AddressBook("btc", "testnet")
        await book.refresh(reader)
        tx = slow.transaction()
        await tx.start()
        await slow.execute(INSERT, 10, "BTC", "btc", "testnet", "tb1qslow", "m/84'/1'/0'/0/10", 10)
        await fast.execute(INSERT, 11, "BTC", "btc", "testnet", "tb1qfast", "m/84'/1'/0'/0/11", 11)
        assert await book.refresh(reader) == 1
        assert book.owner("tb1qfast") == 11 and book.owner("tb1qslow") is None
        await tx.commit()
        assert await book.refresh(reader) == 1
        assert book.owner("tb1qslow") == 10
        assert await book.refresh(reader) == 0
    finally:
        await slow.close()
        await fast.close()
        await reader.close()
