"""Session-wide fixtures: one private Redis and one private PostgreSQL for the run.

- `redis_server` / `pg_server`: the shared-for-this-run private servers (session scope).
- `redis_url`: function scope; the private Redis is flushed before each test that asks.
- `db_url`: module scope; a fresh migrated database per test module.
- `fresh_redis` / `fresh_postgres`: function scope; servers of the test's own, for tests
  that kill -9 and restart them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coffer.localservices import PostgresServer, RedisServer
from tests.harness import flush_redis, new_database, private_postgres, private_redis

pytest_plugins = ["tests.chain_fixtures"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    flush_redis(redis_server)
    return redis_server.url


@pytest.fixture(scope="module")
def db_url(pg_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    label = request.module.__name__.rsplit(".", 1)[-1]
    return new_database(pg_server, label)


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture
def fresh_postgres() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server
