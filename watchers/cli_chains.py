"""`coffer chain eth|btc`: run one local test chain on 127.0.0.1 until SIGTERM / Ctrl-C.

Prints exactly one line `ready <url>` on stdout once the chain answers, so a parent process
(tests/chain_fixtures.py, `coffer up` in demo mode) can read its URL. Both chains keep their
state in memory only: a restart is a new chain. Options: `--block-time S` mines a block every
S seconds; Ethereum: `--manual-mine` (transactions wait for evm_mine), `--safe-depth`,
`--finalized-depth`, `--max-log-range`; Bitcoin: `--network` (regtest only) and `--initial-blocks`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from watchers.testchains.errors import ChainServerError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("chain", help="run a local test chain (Ethereum eth-tester or Bitcoin regtest)")
    parser.add_argument("kind", choices=("eth", "btc"), help="which chain")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--block-time", type=float, default=None, metavar="S",
                        help="mine a block every S seconds (default: only on request / per transaction)")
    parser.add_argument("--manual-mine", action="store_true",
                        help="eth: keep transactions pending until evm_mine (default: one block per tx)")
    parser.add_argument("--safe-depth", type=int, default=2, help="eth: 'safe' tag = latest - N (default 2)")
    parser.add_argument("--finalized-depth", type=int, default=4,
                        help="eth: 'finalized' tag = latest - N (default 4)")
    parser.add_argument("--max-log-range", type=int, default=None, metavar="N",
                        help="eth: refuse eth_getLogs over more than N blocks (as hosted providers do)")
    parser.add_argument("--network", default="regtest", help="btc: network (only regtest)")
    parser.add_argument("--initial-blocks", type=int, default=101,
                        help="btc: blocks mined at start so the faucet's coinbases are mature (default 101)")
    parser.set_defaults(func=handle)


def _wait_for_signal() -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass


def handle(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise ChainServerError(f"--port must be 0-65535, got {args.port}")
    if args.block_time is not None and args.block_time <= 0:
        raise ChainServerError("--block-time must be positive")
    server: Any
    if args.kind == "eth":
        from watchers.testchains.eth_chain import EthTestChain
        from watchers.testchains.eth_rpc import EthRpcServer

        if args.safe_depth < 0 or args.finalized_depth < args.safe_depth:
            raise ChainServerError("need 0 <= --safe-depth <= --finalized-depth")
        if args.max_log_range is not None and args.max_log_range < 1:
            raise ChainServerError("--max-log-range must be >= 1")
        chain = EthTestChain(auto_mine=not args.manual_mine, safe_depth=args.safe_depth,
                             finalized_depth=args.finalized_depth, max_log_range=args.max_log_range)
        try:
            server = EthRpcServer(chain, args.host, args.port, block_time_s=args.block_time)
        except OSError as exc:
            raise ChainServerError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    else:
        from watchers.testchains.esplora_regtest import EsploraServer
        from watchers.testchains.regtest_chain import RegtestChain

        if args.network != "regtest":
            raise ChainServerError(f"the Bitcoin test chain only runs regtest, not {args.network!r}")
        if args.initial_blocks < 0:
            raise ChainServerError("--initial-blocks must be >= 0")
        btc = RegtestChain()
        btc.mine(args.initial_blocks)
        try:
            server = EsploraServer(btc, args.host, args.port, block_time_s=args.block_time)
        except OSError as exc:
            raise ChainServerError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    server.start()
    print(f"ready {server.url}", flush=True)
    try:
        _wait_for_signal()
    finally:
        server.stop()
    sys.stdout.flush()
    return 0
