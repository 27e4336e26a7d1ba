"""The `coffer` console script: one argparse tree, sub-commands contributed by packages.

Each package that has commands provides a module with `register(subparsers)`, which adds
its parser(s) and sets `func` to a handler `(args) -> int`. Handlers build `Settings`
themselves (`Settings.from_env()` plus flags) and import heavy libraries lazily, so
`coffer --help` stays fast. Errors that a user can act on end as one line on stderr,
never as a traceback; unexpected ones too, unless COFFER_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules that contribute sub-commands; a module not (yet) present is skipped.
COMMAND_MODULES = (
    "coffer.cli_up",
    "coffer.cli_db",
    "wallet.cli",
    "watchers.cli",
    "watchers.cli_chains",
    "ledger.cli",
    "matcher.cli",
    "api.cli",
    "api.cli_users",
    "ledger.cli_withdrawals",
)

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERNAL = 70

# The root errors of our packages: their message is written for the user.
_USER_ERROR_MODULES = ("coffer", "wallet", "signer", "ledger", "matcher", "watchers", "api")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coffer", description="Coffer: custody, ledger and exchange.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def is_user_error(exc: BaseException) -> bool:
    """True for our packages' own errors, whose messages are meant for the user."""
    for cls in type(exc).__mro__:
        root = cls.__module__.split(".")[0]
        if root in _USER_ERROR_MODULES and cls.__name__.endswith("Error"):
            return True
    return False


def run_handler(func: object, args: argparse.Namespace, prog: str = "coffer") -> int:
    """Call a handler; turn exceptions into one line on stderr and an exit code."""
    debug = os.environ.get("COFFER_DEBUG") == "1"
    try:
        rc = func(args)  # type: ignore[operator]
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_user_error(exc):
            print(f"{prog}: error: {msg}", file=sys.stderr)
            return EXIT_FAILURE
        print(f"{prog}: internal error: {type(exc).__name__}: {msg} (set COFFER_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_INTERNAL
    return int(rc or 0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run_handler(_on_chosen_loop(args.func), args)


def _on_chosen_loop(func: object) -> object:
    """`func`, run after installing the event loop of COFFER_EVENT_LOOP (coffer/event_loop.py),
    so a bad setting is reported as any other user error."""

    def call(args: argparse.Namespace) -> object:
        from coffer.event_loop import install

        install()
        return func(args)  # type: ignore[operator]

    return call


if __name__ == "__main__":
    sys.exit(main())
