"""`coffer db migrate`: apply the ordered SQL migrations of every package."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from coffer.errors import SettingsError
from coffer.settings import Settings


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("db", help="database administration")
    cmds = parser.add_subparsers(dest="db_command", metavar="CMD")
    cmds.required = True
    mig = cmds.add_parser("migrate", help="apply pending migrations")
    mig.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    mig.set_defaults(func=_migrate)
    status = cmds.add_parser("status", help="list migrations and whether each is applied")
    status.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    status.set_defaults(func=_status)


def _url(args: argparse.Namespace) -> str:
    url = args.database_url or Settings.from_env().database_url.get()
    if not url:
        raise SettingsError("no database: set COFFER_DATABASE_URL or pass --database-url")
    return str(url)


async def migrate_url(url: str) -> list[str]:
    """Apply pending migrations at `url`; returns the names applied."""
    import asyncpg

    from coffer import migrate
    from coffer.dbcheck import check_postgres

    await check_postgres(url)
    conn = await asyncpg.connect(url)
    try:
        applied = await migrate.apply(conn)
    finally:
        await conn.close()
    return [f"{m.package}/{m.name}" for m in applied]


def _migrate(args: argparse.Namespace) -> int:
    applied = asyncio.run(migrate_url(_url(args)))
    for name in applied:
        print(f"applied {name}")
    print(f"{len(applied)} migration(s) applied; schema up to date")
    return 0


def _status(args: argparse.Namespace) -> int:
    import asyncpg

    from coffer import migrate
    from coffer.dbcheck import check_postgres

    async def run() -> set[int]:
        url = _url(args)
        await check_postgres(url)
        conn = await asyncpg.connect(url)
        try:
            exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
            if not exists:
                return set()
            return {int(r["version"]) for r in await conn.fetch("SELECT version FROM schema_migrations")}
        finally:
            await conn.close()

    done = asyncio.run(run())
    for mig in migrate.discover():
        mark = "applied" if mig.version in done else "pending"
        print(f"{mig.version:04d} {mig.package}/{mig.name} {mark}")
    return 0
