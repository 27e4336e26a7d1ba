"""Deposit credit and reversal: the one narrow interface the chain watchers call.

Both functions run inside the CALLER's transaction (the watcher owns it, so its own
progress and the credit commit together) and never commit themselves. Amounts are in
LEDGER units of the asset. Both are idempotent by `deposit_key`.

Locking: each call locks one balance row (user, asset). A caller that credits or reverses
several deposits in ONE transaction must do them in (user_id, asset) order — the order in
which the ledger's consumers lock balances — or PostgreSQL may detect a deadlock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.errors import InvalidAmountError, UnknownAssetError, UnknownDepositError, UnknownUserError
from ledger.journal import apply_one

if TYPE_CHECKING:
    import asyncpg


async def credit_deposit(
    conn: asyncpg.Connection,
    *,
    deposit_key: str,
    user_id: int,
    asset: str,
    amount: int,
    txid: str,
    output_index: int,
) -> bool:
    """Credit `amount` (ledger units, > 0) of `asset` to `user_id`'s available balance.

    Returns True when credited now, False when `deposit_key` was already recorded (then
    nothing changes). Raises UnknownUserError / UnknownAssetError / InvalidAmountError.
    """
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidAmountError(f"deposit amount must be a positive integer in ledger units, got {amount!r}")
    known = await conn.fetchrow(
        "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS u, EXISTS (SELECT 1 FROM assets WHERE code = $2) AS a",
        user_id, asset,
    )
    assert known is not None
    if not known["u"]:
        raise UnknownUserError(f"unknown user {user_id}")
    if not known["a"]:
        raise UnknownAssetError(f"unknown asset {asset!r}")
    dep_id = await conn.fetchval(
        """
        INSERT INTO deposits (deposit_key, user_id, asset, amount, txid, output_index, state)
        VALUES ($1, $2, $3, $4, $5, $6, 'credited')
        ON CONFLICT (deposit_key) DO NOTHING
        RETURNING id
        """,
        deposit_key, user_id, asset, amount, txid, output_index,
    )
    if dep_id is None:
        return False
    await apply_one(conn, user_id=user_id, asset=asset, d_available=amount, d_frozen=0, kind="deposit", ref_id=dep_id)
    return True


async def reverse_deposit(conn: asyncpg.Connection, *, deposit_key: str, reason: str) -> bool:
    """Take back a credited deposit (its block was orphaned beyond the reorg threshold).

    The amount leaves `available`, which may go negative: a user with a negative balance
    can place no order and request no withdrawal until it is covered again. Returns True
    when reversed now, False when it was already reversed. Raises UnknownDepositError for
    a key that was never credited.
    """
    row = await conn.fetchrow(
        """
        UPDATE deposits SET state = 'reversed', reverse_reason = $2, reversed_at = now()
        WHERE deposit_key = $1 AND state = 'credited'
        RETURNING id, user_id, asset, amount
        """,
        deposit_key, reason,
    )
    if row is None:
        exists = await conn.fetchval("SELECT 1 FROM deposits WHERE deposit_key = $1", deposit_key)
        if exists is None:
            raise UnknownDepositError(f"no credited deposit with key {deposit_key!r}")
        return False
    await apply_one(
        conn, user_id=row["user_id"], asset=row["asset"], d_available=-int(row["amount"]), d_frozen=0,
        kind="reversal", ref_id=row["id"],
    )
    # the intake's remembered balances may now be too high: its next write is refused and it
    # reads them again (migration 0108); in the caller's transaction, with the lowering
    await conn.execute("UPDATE balance_lowerings SET n = n + 1")
    return True
