"""Withdrawal holds after the intake: settle (it went out) or release (it failed).

The intake consumer holds a withdrawal (available -> frozen, row in `withdrawals` with
state `held`). The withdrawal processor (a later issue) moves it through its own in-flight
states and ends it with one of these two functions, which run in the CALLER's transaction
and are idempotent: a withdrawal already settled or released is left alone (returns False).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.arithmetic import withdrawal_release_deltas, withdrawal_settle_deltas
from ledger.errors import LedgerError
from ledger.journal import apply_one

if TYPE_CHECKING:
    import asyncpg

FINAL_STATES = ("settled", "released")


async def _finish(conn: asyncpg.Connection, withdrawal_id: int, state: str, txid: str | None,
                  reason: str | None) -> tuple[int, str, int] | None:
    row = await conn.fetchrow(
        """
        UPDATE withdrawals SET state = $2, txid = coalesce($3, txid), reason = coalesce($4, reason), updated_at = now()
        WHERE id = $1 AND state NOT IN ('settled', 'released')
        RETURNING user_id, asset, amount
        """,
        withdrawal_id, state, txid, reason,
    )
    if row is None:
        if await conn.fetchval("SELECT 1 FROM withdrawals WHERE id = $1", withdrawal_id) is None:
            raise LedgerError(f"unknown withdrawal {withdrawal_id}")
        return None
    return int(row["user_id"]), str(row["asset"]), int(row["amount"])


async def settle_withdrawal(conn: asyncpg.Connection, *, withdrawal_id: int, txid: str) -> bool:
    """The withdrawal is confirmed on chain: its hold leaves the books."""
    got = await _finish(conn, withdrawal_id, "settled", txid, None)
    if got is None:
        return False
    (d,) = withdrawal_settle_deltas(*got)
    await apply_one(conn, user_id=d.user_id, asset=d.asset, d_available=d.d_available, d_frozen=d.d_frozen,
                    kind="withdraw_settle", ref_id=withdrawal_id)
    return True


async def release_withdrawal(conn: asyncpg.Connection, *, withdrawal_id: int, reason: str) -> bool:
    """The withdrawal failed or was refused: its hold goes back to available."""
    got = await _finish(conn, withdrawal_id, "released", None, reason)
    if got is None:
        return False
    (d,) = withdrawal_release_deltas(*got)
    await apply_one(conn, user_id=d.user_id, asset=d.asset, d_available=d.d_available, d_frozen=d.d_frozen,
                    kind="withdraw_release", ref_id=withdrawal_id)
    return True
