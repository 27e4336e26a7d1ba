"""PostgreSQL state of the withdrawal processor (tables of migration 0700), in the caller's transaction.

`wd_proc` is each withdrawal's stage; `wd_txs` every transaction built, persisted before it
is broadcast; `wd_btc_inputs` the coins a live transaction holds; `wd_eth_nonces` /
`wd_eth_free_nonces` the nonce manager: a nonce is taken in the same transaction that stores
the transaction using it, and given back (reused first) only when that transaction is
abandoned before any node saw it, so no nonce is ever used twice or skipped. Nothing here commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

TX_COLUMNS = (
    "id, withdrawal_id, purpose, chain, network, asset, destination, amount_chain, fee_chain, fee_rate, tip_wei, "
    "from_address, nonce, unsigned, signed, txid, state, replaces, generation, reason, broadcasts, "
    "first_broadcast_at, last_broadcast_at, confirmed_height, network_fee_chain, created_at"
)
LIVE_TX_STATES = ("broadcast", "replaced")


async def set_stage(conn: asyncpg.Connection, withdrawal_id: int, stage: str, *, reason: str | None = None,
                    path: str | None = None) -> None:
    await conn.execute(
        "UPDATE wd_proc SET stage = $2, reason = coalesce($3, reason), path = coalesce($4, path), updated_at = now() "
        "WHERE withdrawal_id = $1", withdrawal_id, stage, reason, path)


async def take_up_new(conn: asyncpg.Connection) -> int:
    """Give every held withdrawal the processor has not seen a `wd_proc` row (stage new)."""
    rows = await conn.fetch(
        """
        INSERT INTO wd_proc (withdrawal_id, chain, stage)
        SELECT w.id, a.chain, 'new' FROM withdrawals w JOIN assets a ON a.code = w.asset
         WHERE w.state = 'held' AND NOT EXISTS (SELECT 1 FROM wd_proc p WHERE p.withdrawal_id = w.id)
        ON CONFLICT DO NOTHING RETURNING withdrawal_id
        """)
    return len(rows)


async def insert_tx(conn: asyncpg.Connection, **fields: Any) -> int:
    names = list(fields)
    placeholders = ", ".join(f"${i + 1}" for i in range(len(names)))
    value = await conn.fetchval(
        f"INSERT INTO wd_txs ({', '.join(names)}) VALUES ({placeholders}) RETURNING id", *fields.values())
    return int(value)


async def update_tx(conn: asyncpg.Connection, tx_id: int, **fields: Any) -> None:
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(fields))
    await conn.execute(f"UPDATE wd_txs SET {sets}, updated_at = now() WHERE id = $1", tx_id, *fields.values())


async def get_tx(conn: asyncpg.Connection, tx_id: int, *, lock: bool = False) -> Any:
    return await conn.fetchrow(f"SELECT {TX_COLUMNS} FROM wd_txs WHERE id = $1" + (" FOR UPDATE" if lock else ""),
                               tx_id)


async def txs_of(conn: asyncpg.Connection, withdrawal_id: int) -> list[Any]:
    return list(await conn.fetch(f"SELECT {TX_COLUMNS} FROM wd_txs WHERE withdrawal_id = $1 ORDER BY id",
                                 withdrawal_id))


async def reserve_inputs(conn: asyncpg.Connection, network: str, outpoints: tuple[str, ...], tx_id: int) -> None:
    await conn.executemany("INSERT INTO wd_btc_inputs (network, outpoint, tx_id) VALUES ($1, $2, $3)",
                           [(network, o, tx_id) for o in outpoints])


async def reserved_outpoints(conn: asyncpg.Connection, network: str) -> set[str]:
    return {r["outpoint"] for r in await conn.fetch("SELECT outpoint FROM wd_btc_inputs WHERE network = $1", network)}


async def move_inputs(conn: asyncpg.Connection, old_tx_id: int, new_tx_id: int) -> None:
    await conn.execute("UPDATE wd_btc_inputs SET tx_id = $2 WHERE tx_id = $1", old_tx_id, new_tx_id)


async def free_inputs(conn: asyncpg.Connection, tx_id: int) -> None:
    await conn.execute("DELETE FROM wd_btc_inputs WHERE tx_id = $1", tx_id)


async def next_change_index(conn: asyncpg.Connection, network: str) -> int:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wd_btc_change:' || $1))", network)
    value = await conn.fetchval("SELECT coalesce(max(change_index) + 1, 0) FROM wd_btc_change WHERE network = $1",
                                network)
    return int(value)


async def record_change(conn: asyncpg.Connection, network: str, index: int, address: str, path: str) -> None:
    await conn.execute(
        "INSERT INTO wd_btc_change (network, change_index, address, derivation_path) VALUES ($1, $2, $3, $4)",
        network, index, address, path)


async def allocate_nonce(conn: asyncpg.Connection, network: str, address: str, chain_pending_nonce: int) -> int:
    """The nonce for a new transaction from `address` (see module doc). `chain_pending_nonce` (the
    node's pending count) seeds the counter the first time only; afterwards the stored counter rules."""
    addr = address.lower()
    row = await conn.fetchrow("SELECT next_nonce FROM wd_eth_nonces WHERE network = $1 AND address = $2 FOR UPDATE",
                              network, addr)
    if row is None:
        await conn.execute(
            "INSERT INTO wd_eth_nonces (network, address, next_nonce) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            network, addr, chain_pending_nonce)
        row = await conn.fetchrow(
            "SELECT next_nonce FROM wd_eth_nonces WHERE network = $1 AND address = $2 FOR UPDATE", network, addr)
    assert row is not None
    free = await conn.fetchval(
        "DELETE FROM wd_eth_free_nonces WHERE (network, address, nonce) = (SELECT network, address, nonce "
        "FROM wd_eth_free_nonces WHERE network = $1 AND address = $2 ORDER BY nonce LIMIT 1) RETURNING nonce",
        network, addr)
    if free is not None:
        return int(free)
    nonce = int(row["next_nonce"])
    await conn.execute("UPDATE wd_eth_nonces SET next_nonce = $3 WHERE network = $1 AND address = $2",
                       network, addr, nonce + 1)
    return nonce


async def give_back_nonce(conn: asyncpg.Connection, network: str, address: str, nonce: int) -> None:
    """A transaction holding `nonce` was abandoned before any node saw it: the next one reuses it."""
    await conn.execute("INSERT INTO wd_eth_free_nonces (network, address, nonce) VALUES ($1, $2, $3) "
                       "ON CONFLICT DO NOTHING", network, address.lower(), nonce)


async def asset_row(conn: asyncpg.Connection, code: str) -> Any:
    return await conn.fetchrow(
        "SELECT code, chain, network, chain_decimals, ledger_decimals, token_contract, required_confirmations, "
        "withdrawal_fee, min_withdrawal FROM assets WHERE code = $1", code)
