"""Test harness helpers: private Redis / PostgreSQL servers and fresh databases.

Every server here is started by the tests themselves, in a temp dir, on a free port; no
shared server is ever used or flushed. Servers can be killed with SIGKILL and restarted
on the same data and port (`kill()` then `start()`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from coffer.localservices import PostgresServer, RedisServer

_db_counter = itertools.count(1)


def make_tempdir(prefix: str) -> Path:
    """A temp dir that the unprivileged postgres user can enter (mkdtemp makes 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@contextmanager
def private_redis(appendfsync: str = "everysec") -> Iterator[RedisServer]:
    server = RedisServer(make_tempdir("coffer-redis-"), appendfsync=appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@contextmanager
def private_postgres(fast_unsafe: bool = True) -> Iterator[PostgresServer]:
    server = PostgresServer(make_tempdir("coffer-pg-"), fast_unsafe=fast_unsafe)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


def new_database(server: PostgresServer, label: str, migrate: bool = True) -> str:
    """Create a fresh database on `server`, apply all migrations, return its URL."""
    import asyncpg

    from coffer import migrate as migrations

    name = re.sub(r"[^a-z0-9_]", "_", f"t{next(_db_counter)}_{label}".lower())[:60]

    async def create() -> None:
        admin = await asyncpg.connect(server.url("postgres"))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        if migrate:
            conn = await asyncpg.connect(server.url(name))
            try:
                await migrations.apply(conn)
            finally:
                await conn.close()

    asyncio.run(create())
    return server.url(name)


def flush_redis(server: RedisServer) -> None:
    """FLUSHALL on our own private server (never on a shared one)."""
    import redis

    client = redis.Redis(port=server.port)
    try:
        client.flushall()
    finally:
        client.close()


def in_ci() -> bool:
    return os.environ.get("CI") == "true"
