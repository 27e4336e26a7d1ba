"""`coffer matcher run` and `coffer matcher marketdata` as processes: two markets, poison input, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from matcher import keys
from matcher.protocol import Command
from tests.matcher.streams import (
    REPO,
    assert_sequenced,
    expected_wire,
    read_out,
    sharded_flow,
    wait_caught_up,
    xadd_batches,
)


def _coffer(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "coffer.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=REPO)


@pytest.mark.asyncio
async def test_run_two_markets_skip_poison_and_sigterm(redis_url: str, db_url: str, tmp_path: Path) -> None:
    r = aioredis.Redis.from_url(redis_url)
    markets = ("BTC-USDT", "ETH-USDT")
    runner = _coffer(["matcher", "run", "--market", markets[0], "--market", markets[1], "--redis-url", redis_url,
                      "--keep-input"],
                     tmp_path / "run.log")
    md = _coffer(["matcher", "marketdata", "--market", markets[0], "--redis-url", redis_url, "--database-url",
                  db_url], tmp_path / "md.log")
    try:
        for i, m in enumerate(markets):
            cmds = sharded_flow(1500, 500 + i, shards=2)
            await xadd_batches(r, m, [cmds[j:j + 30] for j in range(0, 750, 30)])
            await r.xadd(keys.match_in(m), {"b": b"\xc1 not msgpack"})
            # a wrongly typed intake id: refused at decode (the whole entry skipped), where comparing it
            # with the watermark used to raise TypeError out of the runner on every restart
            bad = {"t": "cancel", "oid": 1, "user": 1, "shard": 0, "iid": "99", "ts_ms": 0}
            await r.xadd(keys.match_in(m), {"b": msgspec.msgpack.encode([cmds[0], bad])})
            await xadd_batches(r, m, [cmds[j:j + 30] for j in range(750, 1500, 30)])
        for m in markets:
            await wait_caught_up(r, m)
            rows = await read_out(r, m)
            assert_sequenced(rows)
            assert rows == expected_wire(await read_in_commands_skipping_poison(r, m))
        for _ in range(300):
            if await r.hget(keys.md_checkpoint(markets[0]), "seq") == await r.hget(keys.checkpoint(markets[0]), "seq"):
                break
            await asyncio.sleep(0.02)
        assert await r.hget(keys.md_checkpoint(markets[0]), "seq") == await r.hget(keys.checkpoint(markets[0]), "seq")
        assert await r.hexists(keys.md_depth(markets[0]), "u")
        runner.terminate()
        md.terminate()
        assert runner.wait(15) == 0
        assert md.wait(15) == 0
        for m in markets:
            assert await r.get(keys.lease(m)) is None, "SIGTERM releases the lease"
            assert await r.exists(keys.snapshot(m))
        assert await r.exists(keys.md_state(markets[0]))
        assert "skipping undecodable match:in entry" in (tmp_path / "run.log").read_text()
    finally:
        for proc in (runner, md):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        await r.aclose()


async def read_in_commands_skipping_poison(r: Any, market: str) -> list[Command]:
    from matcher.protocol import ProtocolError, decode_commands

    cmds: list[Command] = []
    for _id, fields in await r.xrange(keys.match_in(market)):
        try:
            cmds.extend(decode_commands(fields[b"b"]))
        except ProtocolError:
            continue
    return cmds


def test_run_without_redis_is_a_one_line_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "COFFER_REDIS_URL"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-m", "coffer.cli", "matcher", "run", "--market", "X"], env=env,
                          capture_output=True, text=True, timeout=30, check=False, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "coffer: error: no Redis: set COFFER_REDIS_URL or pass --redis-url"

