"""The `coffer` console script: errors end as one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from coffer.localservices import free_port


def _coffer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coffer", *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_commands() -> None:
    result = _coffer("--help")
    assert result.returncode == 0
    for command in ("up", "db"):
        assert command in result.stdout


def test_db_migrate_without_database_is_one_line() -> None:
    result = _coffer("db", "migrate", env={"COFFER_DATABASE_URL": ""})
    assert result.returncode == 1
    assert result.stderr.strip() == "coffer: error: no database: set COFFER_DATABASE_URL or pass --database-url"


def test_db_migrate_unreachable_is_one_line() -> None:
    port = free_port()
    result = _coffer("db", "migrate", "--database-url", f"postgresql://u:pw@127.0.0.1:{port}/x")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"coffer: error: cannot reach PostgreSQL at postgresql://u:***@127.0.0.1:{port}/x")


def test_db_migrate_applies_then_is_idempotent(pg_server: object) -> None:
    from coffer.localservices import PostgresServer
    from tests.harness import new_database

    assert isinstance(pg_server, PostgresServer)
    url = new_database(pg_server, "cli_migrate", migrate=False)
    first = _coffer("db", "migrate", "--database-url", url)
    assert first.returncode == 0, first.stderr
    assert "applied coffer/0001_service_meta.sql" in first.stdout
    second = _coffer("db", "migrate", "--database-url", url)
    assert second.returncode == 0
    assert second.stdout.strip() == "0 migration(s) applied; schema up to date"
    status = _coffer("db", "status", "--database-url", url)
    assert "0001 coffer/0001_service_meta.sql applied" in status.stdout


def test_bad_setting_is_one_line() -> None:
    result = _coffer("db", "migrate", env={"COFFER_INTAKE_SHARDS": "many"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "coffer: error: COFFER_INTAKE_SHARDS must be an integer, got 'many'"
