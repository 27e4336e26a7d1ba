"""API key storage: create, load and revoke keys in PostgreSQL, and a short-lived lookup cache.

Table `api_keys` (migration 0600): one row per key with the secret encrypted by the master key
(api/secretbox.py). Functions take a connection and never commit on their own; the caller
owns the transaction. `KeyCache` keeps decrypted keys in process memory for `ttl_s` seconds
so that a signed request costs no database round trip; a revoked key therefore stops working
within `ttl_s`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.errors import CredentialsError
from api.secretbox import MasterKey
from api.signing import new_key_id, new_secret
from coffer.settings import Secret

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A usable key: its id, its user, and the secret (masked in repr)."""

    key_id: str
    user_id: int
    secret: Secret


async def user_exists(conn: asyncpg.Connection, user_id: int) -> bool:
    row = await conn.fetchval("SELECT 1 FROM users WHERE id = $1", user_id)
    return row is not None


async def create_key(conn: asyncpg.Connection, master: MasterKey, user_id: int, label: str = "") -> tuple[str, str]:
    """Create a key for `user_id`; returns `(key_id, secret)`. The secret is shown only now.

    Raises `CredentialsError` when the user does not exist.
    """
    if not await user_exists(conn, user_id):
        raise CredentialsError(f"user {user_id} does not exist")
    key_id = new_key_id()
    secret = new_secret()
    await conn.execute(
        "INSERT INTO api_keys (key_id, user_id, secret_enc, label) VALUES ($1, $2, $3, $4)",
        key_id, user_id, master.encrypt(secret, key_id=key_id), label,
    )
    return key_id, secret


async def load_key(conn: asyncpg.Connection | asyncpg.Pool, master: MasterKey, key_id: str) -> ApiKey | None:
    """The key if it exists and is not revoked, else None."""
    row = await conn.fetchrow(
        "SELECT user_id, secret_enc FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    if row is None:
        return None
    return ApiKey(key_id, int(row["user_id"]), Secret(master.decrypt(bytes(row["secret_enc"]), key_id=key_id)))


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> bool:
    status: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


class KeyCache:
    """Decrypted keys by id for `ttl_s` seconds (misses are cached too, for `miss_ttl_s`)."""

    def __init__(self, pool: Any, master: MasterKey, ttl_s: float = 30.0, miss_ttl_s: float = 2.0,
                 max_entries: int = 100_000) -> None:
        self._pool = pool
        self._master = master
        self._ttl_s = ttl_s
        self._miss_ttl_s = miss_ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[float, ApiKey | None]] = {}

    async def get(self, key_id: str) -> ApiKey | None:
        now = time.monotonic()
        hit = self._entries.get(key_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        key = await load_key(self._pool, self._master, key_id)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key_id] = (now + (self._ttl_s if key is not None else self._miss_ttl_s), key)
        return key

    def forget(self, key_id: str) -> None:
        self._entries.pop(key_id, None)
