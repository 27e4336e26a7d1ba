"""The watchers' PostgreSQL repository: cursor, block-hash chain, observations, deposit state.

Every function takes a connection inside the CALLER's transaction and never commits: the
daemon applies one block (observations, deposit state, confirmations, the ledger credit and
the cursor) in one transaction, so a crash at any point leaves either all of it or none.
Deposit status: `confirming` -> `credited`; `dust` is recorded and never credited;
`orphaned` (block left the chain) -> `confirming` when re-mined, `dropped` if not re-found;
`credited_orphaned` -> `credited` when re-mined, `reversed` if not (ledger reversal + alert).
A deposit re-mined after a reversal is credited again under `<deposit_key>:g<n>`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from watchers.hashchain import to_ledger_units
from watchers.model import AssetRule, BlockScan, Observation

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("watchers.repository")


class CreditFn(Protocol):
    def __call__(self, conn: Any, *, deposit_key: str, user_id: int, asset: str, amount: int, txid: str,
                 output_index: int) -> Awaitable[bool]: ...


class ReverseFn(Protocol):
    def __call__(self, conn: Any, *, deposit_key: str, reason: str) -> Awaitable[bool]: ...


@dataclass(frozen=True, slots=True)
class Cursor:
    height: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    observed: int
    credited: tuple[str, ...]
    confirmed_txids: tuple[str, ...]


def credit_key(deposit_key: str, generation: int) -> str:
    """The ledger's deposit key: the watcher's key, suffixed after a reversal and re-mine."""
    return deposit_key if generation == 0 else f"{deposit_key}:g{generation}"


async def load_cursor(conn: asyncpg.Connection, chain: str, network: str) -> Cursor | None:
    row = await conn.fetchrow(
        "SELECT height, block_hash FROM watcher_cursors WHERE chain = $1 AND network = $2", chain, network)
    return None if row is None else Cursor(int(row["height"]), str(row["block_hash"]))


async def load_blocks(conn: asyncpg.Connection, chain: str, network: str) -> list[tuple[int, str]]:
    rows = await conn.fetch(
        "SELECT height, block_hash FROM watcher_blocks WHERE chain = $1 AND network = $2 ORDER BY height",
        chain, network)
    return [(int(r["height"]), str(r["block_hash"])) for r in rows]


async def load_assets(conn: asyncpg.Connection, chain: str, network: str) -> dict[str, AssetRule]:
    """The ledger's crediting rules of every asset on this chain and network, by code."""
    rows = await conn.fetch(
        """SELECT code, chain_decimals, ledger_decimals, token_contract, required_confirmations, min_deposit
           FROM assets WHERE chain = $1 AND network = $2""", chain, network)
    return {
        r["code"]: AssetRule(r["code"], int(r["chain_decimals"]), int(r["ledger_decimals"]),
                             r["token_contract"].lower() if r["token_contract"] else None,
                             int(r["required_confirmations"]), int(r["min_deposit"]))
        for r in rows
    }


async def follow_tx(conn: asyncpg.Connection, *, chain: str, network: str, txid: str, purpose: str,
                    required_confirmations: int) -> None:
    """Ask the watcher to follow one of the service's own broadcast txs (idempotent)."""
    await conn.execute(
        """INSERT INTO watcher_followed_txs (chain, network, txid, purpose, required_confirmations)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        chain, network, txid.lower(), purpose, required_confirmations)


async def followed_tx_status(conn: asyncpg.Connection, *, chain: str, network: str,
                             txid: str) -> Mapping[str, Any] | None:
    """`status` ('pending'|'confirming'|'confirmed'), `block_height`, `block_hash`, `confirmations`."""
    row = await conn.fetchrow(
        """SELECT status, block_height, block_hash, confirmations FROM watcher_followed_txs
           WHERE chain = $1 AND network = $2 AND txid = $3""", chain, network, txid.lower())
    return None if row is None else dict(row)


async def pending_followed(conn: asyncpg.Connection, *, chain: str, network: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT txid FROM watcher_followed_txs WHERE chain = $1 AND network = $2 AND status = 'pending' ORDER BY txid",
        chain, network)
    return [r["txid"] for r in rows]


async def place_followed(conn: asyncpg.Connection, *, chain: str, network: str, txid: str, block_height: int,
                         block_hash: str, tip_height: int) -> None:
    """A pending followed tx found (by asking the node) in a block of our chain at or below the tip."""
    await conn.execute(
        """UPDATE watcher_followed_txs SET block_height = $4::bigint, block_hash = $5,
               confirmations = $6::bigint - $4::bigint + 1,
               status = CASE WHEN $6::bigint - $4::bigint + 1 >= required_confirmations
                        THEN 'confirmed' ELSE 'confirming' END,
               updated_at = now()
           WHERE chain = $1 AND network = $2 AND txid = $3 AND status = 'pending'""",
        chain, network, txid.lower(), block_height, block_hash, tip_height)


async def add_alert(conn: asyncpg.Connection, *, chain: str, network: str, kind: str, message: str,
                    deposit_key: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO watcher_alerts (chain, network, kind, deposit_key, message) VALUES ($1, $2, $3, $4, $5)",
        chain, network, kind, deposit_key, message)


async def apply_block(
    conn: asyncpg.Connection,
    *,
    chain: str,
    network: str,
    scan: BlockScan,
    assets: Mapping[str, AssetRule],
    keep_blocks: int,
    credit: CreditFn,
    finalized_height: int | None = None,
) -> ApplyResult:
    """Record one block on top of the cursor and credit every deposit it makes mature.

    `finalized_height` (Ethereum `finalized` mode) replaces the confirmation count: a
    deposit matures when its block is at or below it.
    """
    header = scan.header
    await conn.execute(
        "INSERT INTO watcher_blocks (chain, network, height, block_hash, parent_hash) VALUES ($1, $2, $3, $4, $5)",
        chain, network, header.height, header.block_hash, header.parent_hash)
    await conn.execute("DELETE FROM watcher_blocks WHERE chain = $1 AND network = $2 AND height <= $3",
                       chain, network, header.height - keep_blocks)
    obs = [o for o in scan.observations if o.asset in assets]
    if obs:
        await conn.executemany(
            """INSERT INTO watcher_observations (chain, network, deposit_key, txid, output_index, address, user_id,
                   asset, amount_chain, block_height, block_hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING""",
            [(chain, network, o.deposit_key, o.txid, o.output_index, o.address, o.user_id, o.asset,
              o.amount_chain, o.block_height, o.block_hash) for o in obs])
        await _upsert_deposits(conn, chain, network, obs, assets)
    if scan.txids:
        await conn.execute(
            """UPDATE watcher_followed_txs SET status = 'confirming', block_height = $3, block_hash = $4,
                   updated_at = now()
               WHERE chain = $1 AND network = $2 AND status = 'pending' AND txid = ANY($5::text[])""",
            chain, network, header.height, header.block_hash, list(scan.txids))
    credited = await _credit_mature(conn, chain, network, header.height, assets, credit, finalized_height)
    confirmed = await conn.fetch(
        """UPDATE watcher_followed_txs SET confirmations = $3 - block_height + 1,
               status = CASE WHEN $3 - block_height + 1 >= required_confirmations THEN 'confirmed' ELSE status END,
               updated_at = now()
           WHERE chain = $1 AND network = $2 AND status = 'confirming' RETURNING txid, status""",
        chain, network, header.height)
    await conn.execute(
        """INSERT INTO watcher_cursors (chain, network, height, block_hash) VALUES ($1, $2, $3, $4)
           ON CONFLICT (chain, network) DO UPDATE
           SET height = EXCLUDED.height, block_hash = EXCLUDED.block_hash, updated_at = now()""",
        chain, network, header.height, header.block_hash)
    return ApplyResult(len(obs), tuple(credited),
                       tuple(r["txid"] for r in confirmed if r["status"] == "confirmed"))


async def _upsert_deposits(conn: asyncpg.Connection, chain: str, network: str, obs: Iterable[Observation],
                           assets: Mapping[str, AssetRule]) -> None:
    observations = list(obs)
    keys = [o.deposit_key for o in observations]
    existing = {
        r["deposit_key"]: r for r in await conn.fetch(
            "SELECT deposit_key, status, credit_generation FROM watcher_deposits WHERE deposit_key = ANY($1::text[]) "
            "FOR UPDATE", keys)
    }
    for o in observations:
        rule = assets[o.asset]
        amount_ledger = to_ledger_units(o.amount_chain, rule.chain_decimals, rule.ledger_decimals)
        dust = amount_ledger < max(rule.min_deposit, 1)
        row = existing.get(o.deposit_key)
        if row is None:
            await conn.execute(
                """INSERT INTO watcher_deposits (deposit_key, chain, network, asset, user_id, address, txid,
                       output_index, amount_chain, amount_ledger, status, block_height, block_hash)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
                o.deposit_key, chain, network, o.asset, o.user_id, o.address, o.txid, o.output_index,
                o.amount_chain, amount_ledger, "dust" if dust else "confirming", o.block_height, o.block_hash)
            continue
        status, generation = row["status"], int(row["credit_generation"])
        new_status = {"orphaned": "confirming", "dropped": "confirming", "credited_orphaned": "credited",
                      "reversed": "confirming"}.get(status, status)
        if status == "reversed":
            generation += 1
            log.warning("deposit %s re-mined after its reversal: will be credited again as %s",
                        o.deposit_key, credit_key(o.deposit_key, generation))
        await conn.execute(
            """UPDATE watcher_deposits SET status = $2, block_height = $3, block_hash = $4, confirmations = 0,
                   credit_generation = $5, updated_at = now() WHERE deposit_key = $1""",
            o.deposit_key, new_status, o.block_height, o.block_hash, generation)


async def _credit_mature(conn: asyncpg.Connection, chain: str, network: str, tip_height: int,
                         assets: Mapping[str, AssetRule], credit: CreditFn,
                         finalized_height: int | None) -> list[str]:
    rows = await conn.fetch(
        """UPDATE watcher_deposits SET confirmations = $3 - block_height + 1, updated_at = now()
           WHERE chain = $1 AND network = $2 AND status = 'confirming' AND block_height IS NOT NULL
           RETURNING deposit_key, asset, user_id, amount_ledger, txid, output_index, confirmations,
                     block_height, credit_generation""",
        chain, network, tip_height)
    credited: list[str] = []
    for r in sorted(rows, key=lambda r: str(r["deposit_key"])):
        rule = assets.get(r["asset"])
        if rule is None:
            continue
        if finalized_height is not None:
            mature = int(r["block_height"]) <= finalized_height
        else:
            mature = int(r["confirmations"]) >= rule.required_confirmations
        if not mature:
            continue
        key = credit_key(r["deposit_key"], int(r["credit_generation"]))
        fresh = await credit(conn, deposit_key=key, user_id=int(r["user_id"]), asset=r["asset"],
                             amount=int(r["amount_ledger"]), txid=r["txid"], output_index=int(r["output_index"]))
        if not fresh:
            log.warning("ledger already knew deposit %s: not credited twice", key)
        await conn.execute(
            """UPDATE watcher_deposits SET status = 'credited', credited_key = $2, credited_at = now(),
                   updated_at = now() WHERE deposit_key = $1""", r["deposit_key"], key)
        credited.append(key)
    return credited


async def rewind(conn: asyncpg.Connection, *, chain: str, network: str, fork: Cursor) -> list[str]:
    """Orphan everything above the fork point and move the cursor there.

    Returns the keys of credited deposits whose block was orphaned (they are reversed by
    `reconcile` unless the new chain contains them again).
    """
    # Only rows seen in the dropped blocks: matched by block hash, not by height, so rows of an
    # older chain instance (e.g. a retired demo chain) are never touched.
    dropped = [r["block_hash"] for r in await conn.fetch(
        "DELETE FROM watcher_blocks WHERE chain = $1 AND network = $2 AND height > $3 RETURNING block_hash",
        chain, network, fork.height)]
    rows = await conn.fetch(
        """UPDATE watcher_deposits SET
               status = CASE status WHEN 'confirming' THEN 'orphaned' WHEN 'credited' THEN 'credited_orphaned'
                        ELSE status END,
               block_height = NULL, block_hash = NULL, confirmations = 0, updated_at = now()
           WHERE chain = $1 AND network = $2 AND block_hash = ANY($3::text[]) RETURNING deposit_key, status""",
        chain, network, dropped)
    await conn.execute(
        """UPDATE watcher_followed_txs SET status = 'pending', block_height = NULL, block_hash = NULL,
               confirmations = 0, updated_at = now()
           WHERE chain = $1 AND network = $2 AND block_hash = ANY($3::text[])""", chain, network, dropped)
    await conn.execute(
        """UPDATE watcher_cursors SET height = $3, block_hash = $4, updated_at = now()
           WHERE chain = $1 AND network = $2""", chain, network, fork.height, fork.block_hash)
    return [r["deposit_key"] for r in rows if r["status"] == "credited_orphaned"]


async def reconcile(conn: asyncpg.Connection, *, chain: str, network: str, reverse: ReverseFn) -> list[str]:
    """After catching up with the node's tip: drop orphaned deposits, reverse orphaned credits.

    Returns the keys reversed now; each reversal leaves an alert row and an ERROR log line.
    """
    await conn.execute(
        """UPDATE watcher_deposits SET status = 'dropped', updated_at = now()
           WHERE chain = $1 AND network = $2 AND status = 'orphaned'""", chain, network)
    rows = await conn.fetch(
        """SELECT deposit_key, credited_key, user_id, asset, amount_ledger FROM watcher_deposits
           WHERE chain = $1 AND network = $2 AND status = 'credited_orphaned' ORDER BY deposit_key FOR UPDATE""",
        chain, network)
    reversed_keys: list[str] = []
    for r in rows:
        reason = f"block of deposit {r['deposit_key']} orphaned by a reorg after it was credited"
        await reverse(conn, deposit_key=r["credited_key"], reason=reason)
        await conn.execute(
            """UPDATE watcher_deposits SET status = 'reversed', reversed_at = now(), updated_at = now()
               WHERE deposit_key = $1""", r["deposit_key"])
        message = (f"credited deposit {r['credited_key']} ({r['amount_ledger']} {r['asset']} to user "
                   f"{r['user_id']}) reversed: its block left the chain")
        await add_alert(conn, chain=chain, network=network, kind="deposit_reversed", message=message,
                        deposit_key=r["deposit_key"])
        log.error("ALERT %s", message)
        reversed_keys.append(r["deposit_key"])
    return reversed_keys
