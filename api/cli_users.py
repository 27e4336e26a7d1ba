"""`coffer users create` and `coffer keys create|revoke`: users and their API credentials.

`users create` adds a user (table `users`, owned by the ledger) and, unless `--no-key`, an
API key for it; `keys create --user ID` adds another key; `users demo` prints the demo user
of `coffer up` (api/demo.py: created and funded once, kept in the data dir, never in prod).
A new secret is printed once, here, and never again: only its encryption under the API master key (api/secretbox.py,
`COFFER_API_MASTER_KEY` or `<COFFER_DATA_DIR>/api-master.key` outside prod) is stored.
The database is `--database-url` or `COFFER_DATABASE_URL`.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from api.errors import CredentialsError
from coffer.settings import Settings

if TYPE_CHECKING:
    import asyncpg

    from api.secretbox import MasterKey


def register(sub: Any) -> None:
    users: argparse.ArgumentParser = sub.add_parser("users", help="trading users")
    ucmd = users.add_subparsers(dest="users_command", metavar="CMD")
    ucmd.required = True
    create = ucmd.add_parser("create", help="create a user and print its first API key and secret once")
    create.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    create.add_argument("--no-key", action="store_true", help="do not create an API key")
    create.add_argument("--label", default="", help="label stored with the key")
    create.set_defaults(func=_users_create)
    demo = ucmd.add_parser("demo", help="create (once) and print the funded demo user of `coffer up` (not in prod)")
    demo.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    demo.add_argument("--no-funds", action="store_true", help="do not credit the demo balances")
    demo.set_defaults(func=_users_demo)

    keys: argparse.ArgumentParser = sub.add_parser("keys", help="API keys of trading users")
    kcmd = keys.add_subparsers(dest="keys_command", metavar="CMD")
    kcmd.required = True
    kcreate = kcmd.add_parser("create", help="create an API key for a user and print its secret once")
    kcreate.add_argument("--user", type=int, required=True, help="user id")
    kcreate.add_argument("--label", default="", help="label stored with the key")
    kcreate.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    kcreate.set_defaults(func=_keys_create)
    krevoke = kcmd.add_parser("revoke", help="revoke an API key (takes effect within 30 s on running APIs)")
    krevoke.add_argument("key_id", help="the key id (ck_...)")
    krevoke.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    krevoke.set_defaults(func=_keys_revoke)


def _database_url(args: argparse.Namespace, settings: Settings) -> str:
    url = args.database_url or settings.database_url.get()
    if not url:
        raise CredentialsError("no database: set COFFER_DATABASE_URL or pass --database-url")
    return str(url)


def _master(settings: Settings) -> MasterKey:
    from api.secretbox import load_master_key

    return load_master_key(settings.env, settings.data_dir)


async def create_user(conn: asyncpg.Connection) -> int:
    """Insert a new user with the next id; the caller owns the transaction."""
    await conn.execute("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
    user_id: int = await conn.fetchval("INSERT INTO users (id) SELECT coalesce(max(id), 0) + 1 FROM users RETURNING id")
    return user_id


async def create_user_with_key(url: str, master: MasterKey, label: str = "", with_key: bool = True
                               ) -> tuple[int, str, str]:
    """Create a user (and a key); returns `(user_id, key_id, secret)` ('' for no key)."""
    import asyncpg

    from api.keystore import create_key

    conn = await _connect(url)
    try:
        async with conn.transaction():
            user_id = await create_user(conn)
            key_id, secret = (await create_key(conn, master, user_id, label)) if with_key else ("", "")
    except asyncpg.PostgresError as exc:
        raise CredentialsError(f"cannot create the user: {exc}") from exc
    finally:
        await conn.close()
    return user_id, key_id, secret


async def _connect(url: str) -> asyncpg.Connection:
    import asyncpg

    try:
        return await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise CredentialsError(f"cannot connect to PostgreSQL: {exc}") from exc


def _print_credentials(user_id: int, key_id: str, secret: str) -> None:
    print(f"user_id:    {user_id}")
    if key_id:
        print(f"api_key:    {key_id}")
        print(f"api_secret: {secret}")
        print("store the secret now: it is shown only once")


def _users_create(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    url = _database_url(args, settings)
    master = _master(settings)
    user_id, key_id, secret = asyncio.run(create_user_with_key(url, master, args.label, not args.no_key))
    _print_credentials(user_id, key_id, secret)
    return 0


def _users_demo(args: argparse.Namespace) -> int:
    from api.demo import ensure_demo_user

    settings = Settings.from_env()
    url = _database_url(args, settings)
    creds = asyncio.run(ensure_demo_user(url, settings.data_dir, settings.env, fund=not args.no_funds))
    print(f"user_id:    {creds.user_id}")
    print(f"api_key:    {creds.key_id}")
    print(f"api_secret: {creds.secret.get()}")
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from api.keystore import create_key

    settings = Settings.from_env()
    url = _database_url(args, settings)
    master = _master(settings)

    async def run() -> tuple[str, str]:
        conn = await _connect(url)
        try:
            async with conn.transaction():
                return await create_key(conn, master, args.user, args.label)
        finally:
            await conn.close()

    key_id, secret = asyncio.run(run())
    _print_credentials(args.user, key_id, secret)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from api.keystore import revoke_key

    settings = Settings.from_env()
    url = _database_url(args, settings)

    async def run() -> bool:
        conn = await _connect(url)
        try:
            return await revoke_key(conn, args.key_id)
        finally:
            await conn.close()

    if not asyncio.run(run()):
        raise CredentialsError(f"no active API key {args.key_id}")
    print(f"revoked {args.key_id}")
    return 0
