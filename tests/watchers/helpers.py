"""Shared set-up of the watcher tests: demo assets, users, deposit addresses, an in-process watcher.

Deposit addresses are inserted straight into the wallet's `deposit_addresses` table (the
columns agreed between wallet and watchers); the watcher reads them through the real
`wallet.addressbook.AddressBook`, and credits through the real `ledger.deposits`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from ledger.deposits import credit_deposit, reverse_deposit
from wallet.addressbook import AddressBook
from watchers import repository as repo
from watchers.daemon import Watcher, WatcherConfig
from watchers.runner import RunOptions, make_source

NETWORK = "regtest"


async def seed(conn: asyncpg.Connection, usdt_contract: str | None = None) -> None:
    from ledger.demo import seed_demo

    async with conn.transaction():
        await seed_demo(conn, network=NETWORK, usdt_contract=usdt_contract)


async def add_address(conn: asyncpg.Connection, *, user_id: int, chain: str, address: str, index: int) -> None:
    await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
    await conn.execute(
        """INSERT INTO deposit_addresses (user_id, asset, chain, network, address, derivation_path, address_index,
               is_current) VALUES ($1, $2, $3, $4, $5, $6, $7, false)""",
        user_id, "BTC" if chain == "btc" else "ETH", chain, NETWORK, address, f"test/{index}", index)


async def add_addresses(conn: asyncpg.Connection, rows: list[tuple[int, str, str]], first_index: int) -> None:
    """rows: (user_id, chain, address)."""
    async with conn.transaction():
        for i, (user_id, chain, address) in enumerate(rows):
            await add_address(conn, user_id=user_id, chain=chain, address=address, index=first_index + i)


@contextlib.asynccontextmanager
async def watcher(db_url: str, chain: str, node_url: str, start_height: int,
                  **options: Any) -> AsyncIterator[Watcher]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assets = await repo.load_assets(conn, chain, NETWORK)
        run = RunOptions(chain=chain, network=NETWORK, database_url=db_url, node_url=node_url,
                         start_height=start_height, **options)
        source = make_source(run, assets)
        try:
            yield Watcher(WatcherConfig(chain=chain, network=NETWORK, start_height=start_height, retry_delay_s=0.05),
                          pool, source, AddressBook(chain, NETWORK), assets,
                          credit=credit_deposit, reverse=reverse_deposit)
        finally:
            await source.aclose()
    finally:
        await pool.close()


async def available(conn: asyncpg.Connection, user_id: int, asset: str) -> int:
    value = await conn.fetchval("SELECT available FROM balances WHERE user_id = $1 AND asset = $2", user_id, asset)
    return int(value or 0)


async def deposit_row(conn: asyncpg.Connection, txid: str) -> dict[str, Any]:
    rows = await conn.fetch("SELECT * FROM watcher_deposits WHERE txid = $1", txid.lower())
    assert len(rows) == 1, rows
    return dict(rows[0])


async def ledger_deposits(conn: asyncpg.Connection, txid: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM deposits WHERE txid = $1 ORDER BY id", txid.lower())]


async def in_thread(func: Any, *args: Any) -> Any:
    """Run a blocking chain-fixture helper without blocking the event loop."""
    return await asyncio.to_thread(func, *args)
