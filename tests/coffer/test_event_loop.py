"""COFFER_EVENT_LOOP picks the event loop of every `coffer` process: uvloop by default (it is a
service dependency), the standard library's on request, and a bad value is a one-line error."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from coffer.event_loop import EventLoopChoiceError, chosen, install


def test_default_is_uvloop_and_asyncio_on_request() -> None:
    assert chosen({}) == "uvloop"
    assert chosen({"COFFER_EVENT_LOOP": "uvloop"}) == "uvloop"
    assert chosen({"COFFER_EVENT_LOOP": " AsyncIO "}) == "asyncio"


def test_bad_value_names_the_setting_and_the_choices() -> None:
    with pytest.raises(EventLoopChoiceError, match=r"COFFER_EVENT_LOOP must be one of uvloop, asyncio, not 'tokio'"):
        chosen({"COFFER_EVENT_LOOP": "tokio"})


def test_install_sets_the_loop_asyncio_run_uses() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    try:
        assert install({}) == "uvloop"
        assert asyncio.run(loop_module()).startswith("uvloop")
        assert install({"COFFER_EVENT_LOOP": "asyncio"}) == "asyncio"
        assert asyncio.run(loop_module()).startswith("asyncio")
    finally:
        asyncio.set_event_loop_policy(None)


def test_cli_reports_a_bad_value_in_one_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "coffer", "db", "migrate"], capture_output=True, text=True,
                          env={"COFFER_EVENT_LOOP": "tokio", "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.strip() == ("coffer: error: COFFER_EVENT_LOOP must be one of uvloop, asyncio, not 'tokio'")
