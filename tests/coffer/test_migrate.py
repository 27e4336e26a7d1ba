"""Migrations: discovered across packages in number order, applied once, checked for edits."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from coffer import migrate
from coffer.errors import MigrationError
from coffer.localservices import PostgresServer
from tests.harness import new_database


def test_discovered_in_strict_number_order() -> None:
    found = migrate.discover()
    versions = [m.version for m in found]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert found[0].version == 1


def test_changed_migration_is_refused(pg_server: PostgresServer) -> None:
    url = new_database(pg_server, "changed", migrate=False)
    original = migrate.Migration(9001, "9001_x.sql", "coffer", "CREATE TABLE mig_x (a int);")
    edited = migrate.Migration(9001, "9001_x.sql", "coffer", "CREATE TABLE mig_x (a bigint);")

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            assert [m.version for m in await migrate.apply(conn, [original])] == [9001]
            assert await migrate.apply(conn, [original]) == []
            with pytest.raises(MigrationError, match="changed after it was applied"):
                await migrate.apply(conn, [edited])
        finally:
            await conn.close()

    asyncio.run(run())


def test_failed_migration_rolls_back_and_names_the_file(pg_server: PostgresServer) -> None:
    url = new_database(pg_server, "failing", migrate=False)
    bad = migrate.Migration(9002, "9002_bad.sql", "coffer", "CREATE TABLE half (a int); SELECT nope;")

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(MigrationError, match=r"coffer/9002_bad\.sql failed"):
                await migrate.apply(conn, [bad])
            assert await conn.fetchval("SELECT to_regclass('half')") is None
        finally:
            await conn.close()

    asyncio.run(run())
