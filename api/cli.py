"""`coffer api trading` and `coffer api deposits`: serve the two HTTP APIs with uvicorn.

The apps live in `api.trading_app` and `api.deposits_app`; each exposes `serve(args) -> int`.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("api", help="serve the HTTP APIs")
    apis = parser.add_subparsers(dest="api_command", metavar="API")
    apis.required = True
    trading = apis.add_parser("trading", help="public trading API (REST + WebSocket)")
    trading.add_argument("--host", default=None, help="bind address (default COFFER_HOST or 127.0.0.1)")
    trading.add_argument("--port", type=int, default=None, help="port (default COFFER_TRADING_API_PORT or 8000)")
    trading.set_defaults(func=_trading)
    deposits = apis.add_parser("deposits", help="internal deposit-address API (service token)")
    deposits.add_argument("--host", default=None, help="bind address (default COFFER_HOST or 127.0.0.1)")
    deposits.add_argument("--port", type=int, default=None, help="port (default COFFER_DEPOSIT_API_PORT or 8001)")
    deposits.set_defaults(func=_deposits)


def _trading(args: argparse.Namespace) -> int:
    from api.trading_app import serve

    return int(serve(args))


def _deposits(args: argparse.Namespace) -> int:
    from api.deposits_app import serve

    return int(serve(args))
