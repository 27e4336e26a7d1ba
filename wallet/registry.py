"""Deposit-address registry in PostgreSQL: allocation and look-ups (tables of migration 0200).

Functions take a connection and run inside the caller's transaction (they never commit).
`allocate(conn, asset, user_id, new=..., gap_limit=...)` returns the user's current address
for the asset's account, or derives and records the next one. It is idempotent (same user
and account -> same address unless `new`) and safe under concurrency: the account's
counter row in `wallet_accounts` is locked FOR UPDATE, so concurrent allocations get
distinct consecutive indices; the counter moves in the same transaction as the insert, so a
rolled-back allocation leaves no hole. Unique constraints on (chain, network, address) and
(account, address_index) back this up. Errors: `UnknownUserError`, `WalletError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from wallet.config import AssetConfig
from wallet.errors import UnknownUserError, WalletError

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class DepositAddress:
    address: str
    user_id: int
    asset: str
    chain: str
    network: str
    derivation_path: str
    index: int
    is_current: bool
    account: str | None
    created_at: datetime | None


_COLUMNS = "address, user_id, asset, chain, network, derivation_path, address_index, is_current, account, created_at"


def _row(row: Any, asset: str | None = None) -> DepositAddress:
    return DepositAddress(
        address=row["address"], user_id=int(row["user_id"]), asset=asset or row["asset"], chain=row["chain"],
        network=row["network"], derivation_path=row["derivation_path"], index=int(row["address_index"]),
        is_current=bool(row["is_current"]), account=row["account"], created_at=row["created_at"],
    )


async def _current(conn: asyncpg.Connection, user_id: int, account: str) -> Any:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM deposit_addresses WHERE user_id = $1 AND account = $2 AND is_current",
        user_id, account,
    )


async def current_address(conn: asyncpg.Connection, asset: AssetConfig, user_id: int) -> DepositAddress | None:
    row = await _current(conn, user_id, asset.account)
    return None if row is None else _row(row, asset.code)


async def ensure_account(conn: asyncpg.Connection, asset: AssetConfig) -> None:
    """Create the account's counter row if missing (idempotent)."""
    await conn.execute(
        """
        INSERT INTO wallet_accounts (account, chain, network, addr_type, xpub)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account) DO NOTHING
        """,
        asset.account, asset.chain, asset.network, asset.addr_type, asset.deriver.account_key.serialize(),
    )


async def allocate(
    conn: asyncpg.Connection, asset: AssetConfig, user_id: int, *, new: bool = False, gap_limit: int = 20
) -> tuple[DepositAddress, bool]:
    """(address, created). Must run inside a transaction the caller owns."""
    import asyncpg

    if not conn.is_in_transaction():
        raise WalletError("allocate() must run inside a transaction")
    if not new:
        row = await _current(conn, user_id, asset.account)
        if row is not None:
            return _row(row, asset.code), False
    if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)", user_id):
        raise UnknownUserError(f"user {user_id} does not exist")
    await ensure_account(conn, asset)
    next_index = await conn.fetchval(
        "SELECT next_index FROM wallet_accounts WHERE account = $1 FOR UPDATE", asset.account
    )
    if not new:
        # Another transaction may have allocated while we waited for the lock.
        row = await _current(conn, user_id, asset.account)
        if row is not None:
            return _row(row, asset.code), False
    highest = await conn.fetchval(
        "SELECT max(address_index) FROM deposit_addresses WHERE account = $1", asset.account
    )
    hole = next_index - (highest + 1 if highest is not None else 0)
    if hole > gap_limit:
        raise WalletError(
            f"account {asset.account}: next index {next_index} would leave a hole of {hole} unused indices "
            f"(gap limit {gap_limit}); fix wallet_accounts.next_index"
        )
    index = next_index
    derived = asset.deriver.derive(index)
    if new:
        await conn.execute(
            "UPDATE deposit_addresses SET is_current = false WHERE user_id = $1 AND account = $2 AND is_current",
            user_id, asset.account,
        )
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO deposit_addresses
                (user_id, asset, chain, network, address, derivation_path, address_index, is_current, account)
            VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)
            RETURNING {_COLUMNS}
            """,
            user_id, asset.code, asset.chain, asset.network, derived.address, derived.derivation_path, index,
            asset.account,
        )
    except asyncpg.UniqueViolationError as exc:
        raise WalletError(
            f"address {derived.address} (index {index}) is already registered; the account counter is behind"
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownUserError(f"user {user_id} does not exist") from exc
    await conn.execute("UPDATE wallet_accounts SET next_index = $2 WHERE account = $1", asset.account, index + 1)
    return _row(row, asset.code), True


async def list_for_user(conn: asyncpg.Connection, user_id: int) -> list[DepositAddress]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deposit_addresses WHERE user_id = $1 ORDER BY is_current DESC, id DESC", user_id
    )
    return [_row(r) for r in rows]


async def find_owner(conn: asyncpg.Connection, address: str) -> DepositAddress | None:
    """The registry row of `address` (matched case-insensitively), or None."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM deposit_addresses WHERE lower(address) = lower($1) ORDER BY id LIMIT 1", address
    )
    return None if row is None else _row(row)


async def max_index_hole(conn: asyncpg.Connection, account: str) -> int:
    """Largest run of unallocated indices below the highest allocated one (0 = gap-free)."""
    value = await conn.fetchval(
        """
        SELECT coalesce(max(gap), 0) FROM (
            SELECT address_index - coalesce(lag(address_index) OVER (ORDER BY address_index), -1) - 1 AS gap
            FROM deposit_addresses WHERE account = $1
        ) g
        """,
        account,
    )
    return int(value)
