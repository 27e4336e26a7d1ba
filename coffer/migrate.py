"""Migrations: plain ordered SQL files, applied once each, recorded in `schema_migrations`.

Each package that owns tables keeps its files in `<package>/migrations/NNNN_name.sql`.
The number is global across packages (ranges: coffer 0000-0099, ledger 0100-0199,
wallet 0200-0299, watchers 0300-0399, signer 0400-0499, matcher 0500-0599, api 0600-0699,
withdrawals 0700-0799), so the order is total. A file runs in one transaction with its
record; an advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from coffer.errors import MigrationError

if TYPE_CHECKING:
    import asyncpg

MIGRATION_PACKAGES = ("coffer", "ledger", "wallet", "watchers", "signer", "matcher", "api")
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x0C0FFE12


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    package: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(packages: tuple[str, ...] = MIGRATION_PACKAGES) -> list[Migration]:
    """All migration files of `packages`, sorted by version; duplicates are an error."""
    found: dict[int, Migration] = {}
    for package in packages:
        try:
            folder = resources.files(package).joinpath("migrations")
        except ModuleNotFoundError:
            continue
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if not entry.name.endswith(".sql"):
                continue
            match = _NAME.match(entry.name)
            if match is None:
                raise MigrationError(
                    f"migration file name {package}/migrations/{entry.name} is not NNNN_name.sql"
                )
            version = int(match.group(1))
            if version in found:
                other = found[version]
                raise MigrationError(
                    f"migration number {version:04d} used twice: "
                    f"{other.package}/{other.name} and {package}/{entry.name}"
                )
            found[version] = Migration(version, entry.name, package, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def apply(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every migration not yet recorded; returns the ones applied now."""
    import asyncpg

    todo = discover() if migrations is None else migrations
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version integer PRIMARY KEY,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    applied: list[Migration] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {r["version"]: r["checksum"] for r in rows}
        for mig in todo:
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise MigrationError(
                        f"migration {mig.package}/{mig.name} changed after it was applied; add a new migration instead"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        mig.version, f"{mig.package}/{mig.name}", mig.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {mig.package}/{mig.name} failed: {exc}") from exc
            applied.append(mig)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
