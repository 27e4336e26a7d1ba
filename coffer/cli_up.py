"""`coffer up`: the whole stack on one machine.

Starts a private Redis (AOF on) and a private PostgreSQL under `./.coffer/` (or uses
external ones given by flags / COFFER_REDIS_URL / COFFER_DATABASE_URL), applies the
migrations, starts every service this build has, prints what runs where, and on Ctrl-C
or SIGTERM stops everything (children first, then the servers). Re-running reuses the
data directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from coffer.errors import ServiceError
from coffer.settings import MaskedURL, Settings, mask_url

log = logging.getLogger("coffer.up")
DATABASE_NAME = "coffer"


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("up", help="run the whole stack on this machine")
    parser.add_argument("--data-dir", default=None, help="where private servers keep data (default ./.coffer)")
    parser.add_argument("--redis-url", default=None, help="use this Redis instead of a private one")
    parser.add_argument("--database-url", default=None, help="use this PostgreSQL database instead of a private one")
    parser.add_argument("--redis-port", type=int, default=None, help="port for the private Redis (default: free)")
    parser.add_argument(
        "--postgres-port", type=int, default=None, help="port for the private PostgreSQL (default: free)"
    )
    parser.add_argument("--no-services", action="store_true", help="only servers and migrations, no services")
    parser.add_argument(
        "--no-demo", action="store_true",
        help="no local test chains, demo assets, markets or demo user (services only)",
    )
    parser.set_defaults(func=_up)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if args.data_dir:
        changes["data_dir"] = Path(args.data_dir)
    if args.redis_url:
        changes["redis_url"] = MaskedURL(args.redis_url)
    if args.database_url:
        changes["database_url"] = MaskedURL(args.database_url)
    if args.redis_port is not None:
        changes["redis_port"] = args.redis_port
    if args.postgres_port is not None:
        changes["postgres_port"] = args.postgres_port
    return settings.replace(**changes) if changes else settings


def _up(args: argparse.Namespace) -> int:
    from coffer.cli import build_parser
    from coffer.cli_db import migrate_url
    from coffer.dbcheck import check_postgres, check_redis
    from coffer.localservices import PostgresServer, RedisServer, free_port
    from coffer.stack import StackPaths, has_command, plan_services
    from coffer.supervisor import Supervisor, format_table, install_stop_handlers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # demo set-up's chain calls, one line each
    settings = _settings(args)
    paths = StackPaths(settings.data_dir.resolve())
    paths.root.mkdir(parents=True, exist_ok=True)

    # Stop requests that arrive while servers start are honoured once they are up.
    stop_requested: list[int] = []

    def early_handler(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, early_handler)
    signal.signal(signal.SIGTERM, early_handler)

    redis_server: RedisServer | None = None
    pg_server: PostgresServer | None = None
    supervisor = Supervisor(paths.logs, base_env={})
    rows: list[tuple[str, str]] = []
    try:
        if settings.redis_url:
            redis_url = settings.redis_url.get()
            asyncio.run(check_redis(redis_url))
            rows.append(("redis (external)", mask_url(redis_url)))
        else:
            redis_server = RedisServer(paths.redis, port=settings.redis_port)
            redis_server.start()
            redis_url = redis_server.url
            rows.append(("redis", f"{redis_url}  (AOF in {paths.redis})"))
        if settings.database_url:
            database_url = settings.database_url.get()
            asyncio.run(check_postgres(database_url))
            rows.append(("postgresql (external)", mask_url(database_url)))
        else:
            pg_server = PostgresServer(paths.postgres, port=settings.postgres_port)
            pg_server.start()
            asyncio.run(_ensure_database(pg_server.url("postgres"), DATABASE_NAME))
            database_url = pg_server.url(DATABASE_NAME)
            rows.append(("postgresql", f"{database_url}  (data in {pg_server.data_dir})"))
        applied = asyncio.run(migrate_url(database_url))
        rows.append(("migrations", f"{len(applied)} applied now, schema up to date"))

        env = {
            **os.environ,
            "COFFER_REDIS_URL": redis_url,
            "COFFER_DATABASE_URL": database_url,
            "COFFER_DATA_DIR": str(paths.root),
        }
        supervisor = Supervisor(paths.logs, base_env=env)
        parser = build_parser()
        demo = not args.no_services and not args.no_demo and has_command(parser, ("chain",))
        specs = []
        if demo and not stop_requested:
            from coffer import demo as demo_mode

            eth_port, btc_port = free_port(), free_port()
            for spec in demo_mode.chain_specs(eth_port, btc_port):
                supervisor.start(spec)
                rows.append((spec.name, spec.url))
            ready = demo_mode.prepare(paths.root, database_url, f"http://127.0.0.1:{eth_port}",
                                      f"http://127.0.0.1:{btc_port}", settings.env)
            supervisor.update_env(ready.env)
            rows.extend(ready.rows)
            if has_command(parser, ("watcher", "run")):
                specs.extend(demo_mode.watcher_specs())
        if not args.no_services and not stop_requested:
            for spec in plan_services(settings, parser) + specs:
                supervisor.start(spec)
                rows.append((spec.name, spec.url or f"running (log {paths.logs / (spec.name + '.log')})"))
        print("coffer is up:")
        print(format_table(rows))
        print("press Ctrl-C to stop", flush=True)
        install_stop_handlers(supervisor)
        if stop_requested:
            supervisor.request_stop()
        supervisor.run_until_stopped()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        if pg_server is not None:
            pg_server.stop()
        if redis_server is not None:
            redis_server.stop()
        print("coffer stopped", flush=True)
    return 0


async def _ensure_database(admin_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.PostgresError as exc:
        raise ServiceError(f"cannot create database {name}: {exc}") from exc
    finally:
        await conn.close()

