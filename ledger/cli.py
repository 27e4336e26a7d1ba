"""`coffer ledger ...`: `audit` (prove balances from durable records), `run` (the consumers),
`seed-demo` (demo assets and markets).

Configuration: COFFER_DATABASE_URL, COFFER_REDIS_URL and COFFER_INTAKE_SHARDS (Settings).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from coffer.settings import Settings
from ledger.errors import AuditFailedError, LedgerError


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("ledger", help="the ledger: audit, consumers")
    cmds = parser.add_subparsers(dest="ledger_command", metavar="CMD")
    cmds.required = True
    audit = cmds.add_parser("audit", help="recompute every balance from the durable records; exit 1 on any difference")
    audit.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    audit.set_defaults(func=_audit)
    run = cmds.add_parser("run", help="run the intake and settlement consumers until SIGTERM/SIGINT")
    run.add_argument("--roles", default="intake,settlement,withdrawals",
                     help="which consumers this process runs (comma-separated; default all): intake, settlement, "
                          "withdrawals; run each role in one process only")
    run.set_defaults(func=_run)
    seed = cmds.add_parser("seed-demo", help="insert the demo assets (BTC, ETH, USDT) and markets")
    seed.add_argument("--database-url", default=None, help="PostgreSQL URL (default COFFER_DATABASE_URL)")
    seed.add_argument("--network", required=True, help="network stored on the assets, e.g. regtest")
    seed.add_argument("--usdt-contract", default=None, help="ERC-20 address of USDT on that network")
    seed.set_defaults(func=_seed)


def _url(args: argparse.Namespace) -> str:
    url = args.database_url or Settings.from_env().database_url.get()
    if not url:
        raise LedgerError("no database: set COFFER_DATABASE_URL or pass --database-url")
    return str(url)


def _audit(args: argparse.Namespace) -> int:
    import asyncpg

    from ledger.audit import asset_totals, run_audit

    async def main() -> int:
        conn = await asyncpg.connect(_url(args))
        try:
            diffs = await run_audit(conn)
            totals = await asset_totals(conn)
        finally:
            await conn.close()
        for asset, (users, fees) in sorted(totals.items()):
            print(f"{asset}: balances {users} + fee income {fees}")
        for d in diffs:
            print(f"DIFFERENCE {d}")
        if diffs:
            raise AuditFailedError(f"audit found {len(diffs)} difference(s)")
        print("audit clean: every balance is explained by the journal, holds, deposits, trades and withdrawals")
        return 0

    return asyncio.run(main())


def _run(args: argparse.Namespace) -> int:
    from ledger.service import parse_roles, serve

    return serve(Settings.from_env(), parse_roles(args.roles))


def _seed(args: argparse.Namespace) -> int:
    import asyncpg

    from ledger.demo import seed_demo

    async def main() -> None:
        conn = await asyncpg.connect(_url(args))
        try:
            async with conn.transaction():
                await seed_demo(conn, network=args.network, usdt_contract=args.usdt_contract)
        finally:
            await conn.close()

    asyncio.run(main())
    print("demo assets and markets present")
    return 0
