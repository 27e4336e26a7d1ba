"""`coffer api trading` as operators run it: a real uvicorn process, and a one-line error when
its configuration is missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from coffer.localservices import free_port
from tests.api.server import new_user, seed_markets


def test_missing_configuration_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    out = subprocess.run([sys.executable, "-m", "coffer", "api", "trading", "--port", str(free_port())],
                         env={**env, "COFFER_DATA_DIR": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "coffer: error: the trading API needs COFFER_DATABASE_URL and COFFER_REDIS_URL"]


@pytest.mark.asyncio
async def test_serves_signed_requests(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    _, key, secret = await new_user(db_url, tmp_path)
    port = free_port()
    env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_REDIS_URL": redis_url, "COFFER_ENV": "test",
           "COFFER_DATA_DIR": str(tmp_path), "COFFER_LOG_LEVEL": "WARNING"}
    env.pop("COFFER_API_MASTER_KEY", None)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "coffer", "api", "trading", "--port", str(port),
                                                env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        from api.client import CofferClient

        async with CofferClient(f"http://127.0.0.1:{port}", key, secret) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    await c.time()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and proc.returncode is None, "the API did not start"
                    await asyncio.sleep(0.1)
            assert await c.balances() == []
            assert {m["symbol"] for m in await c.markets()} == {"BTC-USDT", "ETH-USDT", "ETH-BTC"}
    finally:
        if proc.returncode is None:
            proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal it captured
    assert proc.returncode in (0, -15), err.decode()[-2000:]
    assert b"Traceback" not in err
    assert secret.encode() not in err
