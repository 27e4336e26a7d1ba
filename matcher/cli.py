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



def _replay(args: argparse.Namespace) -> int:
    import json

    from matcher.replay import Replayer, parse_step

    replayer = Replayer(parse_step(args.tick, "tick"), parse_step(args.lot, "lot"), args.stp)
    write = sys.stdout.write
    for event in replayer.run(sys.stdin):
        write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0
