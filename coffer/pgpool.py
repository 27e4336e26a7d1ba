"""Releasing a pooled PostgreSQL connection without a round trip.

asyncpg's pool runs a reset query on every release (`pg_advisory_unlock_all(); CLOSE ALL;
UNLISTEN *; RESET ALL` for what the server supports): one more round trip for every pooled
statement. Coffer's service pools (the ledger consumers, the trading API) never set session state,
LISTEN or take session-level advisory locks (only `pg_advisory_xact_lock`), so they pass
`reset=keep_session` and skip it; asyncpg still rolls back a transaction left open. A pool whose
users do keep session state (the migrator's advisory lock, the watchers' leader lock) must not."""

from __future__ import annotations


async def keep_session(conn: object) -> None:
    """asyncpg pool `reset`: nothing beyond asyncpg's own rollback (see the module docstring)."""
    return None
