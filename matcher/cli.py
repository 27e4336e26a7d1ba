"""`coffer matcher ...`: the replay audit tool, the stream runner and the market-data consumer.

- `coffer matcher replay --tick T --lot L [--stp MODE]`: JSON lines on stdin -> events on stdout
  (format in `matcher.replay`), exit 0 at end of input.
- `coffer matcher run --market M [--market M2 ...]`: the Redis stream runner (`matcher.runner`).
- `coffer matcher marketdata --market M [...]`: depth, trades and K-lines from `match:out{M}`
  (`matcher.marketdata`).

Redis comes from COFFER_REDIS_URL (or `--redis-url`); the market-data consumer also needs
COFFER_DATABASE_URL (or `--database-url`) for closed K-line buckets.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("matcher", help="matching engine: replay, run, market data")
    cmds = parser.add_subparsers(dest="matcher_command", metavar="COMMAND")
    cmds.required = True

    replay = cmds.add_parser("replay", help="replay JSON-line orders through the engine (stdin -> stdout)")
    replay.add_argument("--tick", required=True, help="price step, a decimal such as 0.01")
    replay.add_argument("--lot", required=True, help="quantity step, a decimal such as 0.001")
    replay.add_argument("--stp", default="none", choices=("none", "cancel_taker", "cancel_maker", "cancel_both"),
                        help="self-trade prevention mode applied to every order (default none)")
    replay.set_defaults(func=_replay)

    run = cmds.add_parser("run", help="run the engine for one or more markets on Redis streams")
    run.add_argument("--market", action="append", required=True, help="market code, e.g. BTC-USDT (repeatable)")
    run.add_argument("--redis-url", default=None, help="default COFFER_REDIS_URL")
    run.add_argument("--snapshot-interval", type=float, default=10.0, help="seconds between book snapshots")
    run.add_argument("--keep-input", action="store_true",
                     help="never trim match:in (by default each snapshot trims it before the previous snapshot)")
    run.add_argument("--lease-ms", type=int, default=3000, help="leader lease time-to-live in milliseconds")
    run.add_argument("--batch", type=int, default=100, help="max match:in entries read per XREAD")
    run.set_defaults(func=_run)

    md = cmds.add_parser("marketdata", help="compute depth, recent trades and K-lines from match:out")
    md.add_argument("--market", action="append", required=True, help="market code (repeatable)")
    md.add_argument("--redis-url", default=None, help="default COFFER_REDIS_URL")
    md.add_argument("--database-url", default=None, help="default COFFER_DATABASE_URL")
    md.add_argument("--depth-levels", type=int, default=50, help="levels per side in the depth snapshot")
    md.add_argument("--recent-trades", type=int, default=500, help="public trades kept in md:trades{M}")
    md.add_argument("--state-interval", type=float, default=5.0, help="seconds between saves of the consumer state")
    md.set_defaults(func=_marketdata)


def _replay(args: argparse.Namespace) -> int:
    import json

    from matcher.replay import Replayer, parse_step

    replayer = Replayer(parse_step(args.tick, "tick"), parse_step(args.lot, "lot"), args.stp)
    write = sys.stdout.write
    for event in replayer.run(sys.stdin):
        write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


def _redis_url(args: argparse.Namespace) -> str:
    from coffer.settings import Settings
    from matcher.errors import MatcherError

    url: str = args.redis_url or Settings.from_env().redis_url.get()
    if not url:
        raise MatcherError("no Redis: set COFFER_REDIS_URL or pass --redis-url")
    return url


def _run(args: argparse.Namespace) -> int:
    from matcher.errors import MatcherError
    from matcher.runner import RunnerConfig, serve

    if args.snapshot_interval <= 0 or args.lease_ms < 100 or args.batch < 1:
        raise MatcherError("--snapshot-interval must be > 0, --lease-ms >= 100 and --batch >= 1")
    config = RunnerConfig(
        markets=tuple(args.market), redis_url=_redis_url(args), snapshot_interval_s=args.snapshot_interval,
        lease_ms=args.lease_ms, batch=args.batch, trim_input=not args.keep_input,
    )
    return serve(config)


def _marketdata(args: argparse.Namespace) -> int:
    from coffer.settings import Settings
    from matcher.errors import MatcherError
    from matcher.marketdata import MarketDataConfig, serve

    db_url: str = args.database_url or Settings.from_env().database_url.get()
    if not db_url:
        raise MatcherError("no PostgreSQL: set COFFER_DATABASE_URL or pass --database-url")
    if args.depth_levels < 1 or args.recent_trades < 1 or args.state_interval < 0:
        raise MatcherError("--depth-levels and --recent-trades must be >= 1, --state-interval >= 0")
    return serve(MarketDataConfig(markets=tuple(args.market), redis_url=_redis_url(args), database_url=db_url,
                                  depth_levels=args.depth_levels, recent_trades=args.recent_trades,
                                  state_interval_s=args.state_interval))
