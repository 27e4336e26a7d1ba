"""`coffer watcher run --chain btc|eth`: start the confirmation watcher daemon for one chain.

Settings: COFFER_DATABASE_URL (required) from coffer.settings, plus the watcher's own
environment variables (flags win over them):
- COFFER_WATCHER_NETWORK          network name as in the ledger's `assets` (e.g. regtest, mainnet)
- COFFER_WATCHER_ESPLORA_URL      Esplora base URL, for --chain btc
- COFFER_WATCHER_ETH_RPC_URL      Ethereum JSON-RPC URL, for --chain eth
- COFFER_WATCHER_START_HEIGHT     first height to scan when there is no cursor yet (default: the tip)
- COFFER_WATCHER_POLL_S           seconds between polls when caught up (default 2)
- COFFER_WATCHER_ETH_FINALITY     `confirmations` (default) or `finalized` (credit at the finalized tag)
- COFFER_WATCHER_STOP_GRACE_S     seconds a SIGTERM/SIGINT waits for the current block (default 10)
`--once` catches up with the tip, reconciles and exits (0).
`coffer watcher status --chain btc|eth` prints the cursor, deposits by status and recent alerts.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from watchers.errors import WatcherConfigError

STOP_GRACE_S = 10.0  # default of COFFER_WATCHER_STOP_GRACE_S


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("watcher", help="chain confirmation watcher")
    cmds = parser.add_subparsers(dest="watcher_command", metavar="CMD")
    cmds.required = True
    run = cmds.add_parser("run", help="follow a chain and credit confirmed deposits")
    run.add_argument("--chain", required=True, choices=("btc", "eth"))
    run.add_argument("--network", default=None, help="network (default COFFER_WATCHER_NETWORK)")
    run.add_argument("--node-url", default=None,
                     help="Esplora base URL or Ethereum JSON-RPC URL (default from the environment)")
    run.add_argument("--start-height", type=int, default=None,
                     help="first height to scan when there is no cursor (default: current tip)")
    run.add_argument("--once", action="store_true", help="catch up with the tip, then exit")
    run.set_defaults(func=_run)
    status = cmds.add_parser("status", help="cursor, deposits by status and recent alerts of a watcher")
    status.add_argument("--chain", required=True, choices=("btc", "eth"))
    status.add_argument("--network", default=None, help="network (default COFFER_WATCHER_NETWORK)")
    status.set_defaults(func=_status)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "")
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise WatcherConfigError(f"{name} must be an integer, got {raw!r}") from None


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise WatcherConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise WatcherConfigError(f"{name} must not be negative, got {raw!r}")
    return value


def _run(args: argparse.Namespace) -> int:
    from coffer.settings import Settings
    from watchers.runner import RunOptions, run_watcher

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per HTTP request to the node drowns what the watcher itself says.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    database_url = settings.database_url.get()
    if not database_url:
        raise WatcherConfigError("no database: set COFFER_DATABASE_URL")
    network = args.network or os.environ.get("COFFER_WATCHER_NETWORK", "")
    if not network:
        raise WatcherConfigError("no network: pass --network or set COFFER_WATCHER_NETWORK")
    env_name = "COFFER_WATCHER_ESPLORA_URL" if args.chain == "btc" else "COFFER_WATCHER_ETH_RPC_URL"
    node_url = args.node_url or os.environ.get(env_name, "")
    if not node_url:
        raise WatcherConfigError(f"no node URL: pass --node-url or set {env_name}")
    finality = os.environ.get("COFFER_WATCHER_ETH_FINALITY", "confirmations")
    if finality not in ("confirmations", "finalized"):
        raise WatcherConfigError(f"COFFER_WATCHER_ETH_FINALITY must be confirmations or finalized, got {finality!r}")
    poll_s = _env_seconds("COFFER_WATCHER_POLL_S", 2.0)
    grace_s = _env_seconds("COFFER_WATCHER_STOP_GRACE_S", STOP_GRACE_S)
    start = args.start_height if args.start_height is not None else _env_int("COFFER_WATCHER_START_HEIGHT")
    options = RunOptions(
        chain=args.chain, network=network, database_url=database_url, node_url=node_url, start_height=start,
        poll_interval_s=poll_s, use_finalized=finality == "finalized", once=args.once,
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def on_signal() -> None:
            # Finish the current block, then stop; a step stuck on an unreachable node is
            # cancelled after a grace period (its transaction rolls back: nothing half-done).
            stop.set()
            loop.call_later(grace_s, task.cancel)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            progress = await run_watcher(options, stop)
        except asyncio.CancelledError:
            logging.getLogger("watchers").warning("watcher cancelled after %.1f s grace", grace_s)
            return
        logging.getLogger("watchers").info("watcher stopped: %s", progress)

    asyncio.run(main())
    return 0


def _status(args: argparse.Namespace) -> int:
    from coffer.settings import Settings

    database_url = Settings.from_env().database_url.get()
    if not database_url:
        raise WatcherConfigError("no database: set COFFER_DATABASE_URL")
    network = args.network or os.environ.get("COFFER_WATCHER_NETWORK", "")
    if not network:
        raise WatcherConfigError("no network: pass --network or set COFFER_WATCHER_NETWORK")
    for line in asyncio.run(status_lines(database_url, args.chain, network)):
        print(line)
    return 0


async def status_lines(database_url: str, chain: str, network: str) -> list[str]:
    """Human-readable state of one watcher, read from PostgreSQL."""
    import asyncpg

    from coffer.settings import mask_url
    from watchers import repository as repo

    try:
        conn = await asyncpg.connect(database_url)
    except (OSError, asyncpg.PostgresError) as exc:
        raise WatcherConfigError(f"cannot connect to PostgreSQL at {mask_url(database_url)}: {exc}") from exc
    try:
        cursor = await repo.load_cursor(conn, chain, network)
        counts = await conn.fetch(
            """SELECT status, count(*) AS n FROM watcher_deposits WHERE chain = $1 AND network = $2
               GROUP BY status ORDER BY status""", chain, network)
        alerts = await conn.fetch(
            """SELECT created_at, kind, message FROM watcher_alerts WHERE chain = $1 AND network = $2
               ORDER BY id DESC LIMIT 5""", chain, network)
        followed = await conn.fetch(
            """SELECT status, count(*) AS n FROM watcher_followed_txs WHERE chain = $1 AND network = $2
               GROUP BY status ORDER BY status""", chain, network)
    finally:
        await conn.close()
    lines = [f"watcher {chain}/{network}: " + (
        "no cursor yet" if cursor is None else f"height {cursor.height} block {cursor.block_hash}")]
    lines.append("deposits: " + (", ".join(f"{r['status']} {r['n']}" for r in counts) or "none"))
    lines.append("followed txs: " + (", ".join(f"{r['status']} {r['n']}" for r in followed) or "none"))
    lines.append(f"alerts: {len(alerts)} recent" if alerts else "alerts: none")
    lines.extend(f"  {a['created_at']:%Y-%m-%d %H:%M:%S} {a['kind']}: {a['message']}" for a in alerts)
    return lines
