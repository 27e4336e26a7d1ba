"""The balance-change journal: one row per change of (available, frozen) of a user's asset.

Every function here writes the balance and its journal row(s) in the CALLER's transaction;
nothing commits on its own. Single operations (deposit, reversal, withdrawal settle and
release) write one row each, referencing their record. The consumers write with COPY one
row per (user, asset) per batch — kind `intake` (freezes and withdrawal holds, ref = last
intake id) or `settle` (trades and releases, ref = last engine seq) — and the audit checks
those rows against the orders and trades that explain them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

JOURNAL_COLUMNS = ("user_id", "asset", "d_available", "d_frozen", "kind", "ref_id")
JournalRow = tuple[int, str, int, int, str, int]


async def apply_one(
    conn: asyncpg.Connection, *, user_id: int, asset: str, d_available: int, d_frozen: int, kind: str, ref_id: int
) -> tuple[int, int]:
    """Add the deltas to one balance (creating the row) and journal them; returns the new balance."""
    row = await conn.fetchrow(
        """
        INSERT INTO balances AS b (user_id, asset, available, frozen) VALUES ($1, $2, $3, $4)
        ON CONFLICT (user_id, asset) DO UPDATE
            SET available = b.available + EXCLUDED.available, frozen = b.frozen + EXCLUDED.frozen
        RETURNING available, frozen
        """,
        user_id, asset, d_available, d_frozen,
    )
    await conn.execute(
        "INSERT INTO balance_journal (user_id, asset, d_available, d_frozen, kind, ref_id) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        user_id, asset, d_available, d_frozen, kind, ref_id,
    )
    assert row is not None
    return int(row["available"]), int(row["frozen"])


async def copy_rows(conn: asyncpg.Connection, rows: list[JournalRow]) -> None:
    """Append many journal rows with one COPY."""
    if rows:
        await conn.copy_records_to_table("balance_journal", records=rows, columns=JOURNAL_COLUMNS)


def net_journal_rows(net: dict[tuple[int, str], list[int]], kind: str, ref_id: int) -> list[JournalRow]:
    """Journal rows for a consumer batch: one per (user, asset) with the batch's net change
    (the consumers' per-event detail lives in orders and trades)."""
    return [(u, a, v[0], v[1], kind, ref_id) for (u, a), v in sorted(net.items())]


async def ensure_user(conn: asyncpg.Connection, user_id: int) -> None:
    """Create the user row if missing (idempotent)."""
    await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
