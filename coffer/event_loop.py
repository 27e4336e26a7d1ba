"""Which asyncio event loop Coffer's processes run on: uvloop where it is installed, unless
`COFFER_EVENT_LOOP=asyncio` asks for the standard library's.

uvloop (libuv underneath, by asyncpg's authors) runs the same asyncio code with less of the
interpreter in every socket read, write and timer. On this 2-core machine the ledger consumers,
the matcher and the API spend much of their CPU in exactly that: many small round trips to
Redis and PostgreSQL. bench figures with and without it are in the issue notes; any process can
be started on the standard loop for comparison or if uvloop misbehaves."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Mapping

ENV = "COFFER_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


class EventLoopChoiceError(ValueError):
    pass


def chosen(environ: Mapping[str, str] | None = None) -> str:
    """`uvloop` or `asyncio`: the setting, or uvloop when it is importable."""
    env = os.environ if environ is None else environ
    value = env.get(ENV, "").strip().lower()
    if value and value not in CHOICES:
        raise EventLoopChoiceError(f"{ENV} must be one of {', '.join(CHOICES)}, not {value!r}")
    if value == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is None:
        if value == "uvloop":
            raise EventLoopChoiceError(f"{ENV}=uvloop but uvloop is not installed (make setup installs it)")
        return "asyncio"
    return "uvloop"


def install(environ: Mapping[str, str] | None = None) -> str:
    """Make every later `asyncio.run` in this process use the chosen loop; returns its name."""
    name = chosen(environ)
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)
    return name
