"""The balance-change journal: one row per change of (available, frozen) of a user's asset.

Every function here writes the balance and its journal row(s) in the CALLER's transaction;
nothing commits on its own. Bulk paths (the consumers) write the journal with COPY.
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


async def ensure_user(conn: asyncpg.Connection, user_id: int) -> None:
    """Create the user row if missing (idempotent)."""
    await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
