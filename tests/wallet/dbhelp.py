"""Test helpers for the wallet tests: users rows in the ledger's table when it exists."""

from __future__ import annotations

from typing import Any


async def ensure_users(conn: Any, user_ids: list[int]) -> None:
    """Insert `user_ids` into the ledger's `users` table (if that table exists yet)."""
    if await conn.fetchval("SELECT to_regclass('users') IS NOT NULL"):
        await conn.execute(
            "INSERT INTO users (id) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING", user_ids
        )
