"""The harness itself: private servers answer, survive kill -9 and restart with their data."""

from __future__ import annotations

import asyncio

import asyncpg
import redis

from coffer.localservices import PostgresServer, RedisServer


def test_redis_kill_and_restart_keeps_aof_data(fresh_redis: RedisServer) -> None:
    client = redis.Redis(port=fresh_redis.port)
    client.config_set("appendfsync", "always")
    client.xadd("s", {"k": "v"})
    client.close()
    fresh_redis.kill()
    fresh_redis.start()
    client = redis.Redis(port=fresh_redis.port)
    assert client.xlen("s") == 1
    client.close()


def test_postgres_kill_and_restart_keeps_committed_rows(fresh_postgres: PostgresServer) -> None:
    async def write() -> None:
        conn = await asyncpg.connect(fresh_postgres.url())
        await conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42)")
        await conn.close()

    async def read() -> int:
        conn = await asyncpg.connect(fresh_postgres.url())
        value = await conn.fetchval("SELECT x FROM t")
        await conn.close()
        return int(value)

    asyncio.run(write())
    fresh_postgres.kill()
    fresh_postgres.start()
    assert asyncio.run(read()) == 42


def test_db_url_is_migrated(db_url: str) -> None:
    async def versions() -> list[int]:
        conn = await asyncpg.connect(db_url)
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        await conn.close()
        return [r["version"] for r in rows]

    assert 1 in asyncio.run(versions())
