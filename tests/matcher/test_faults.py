"""Crash tests of the runner: kill -9 the runner, kill -9 Redis (AOF everysec), fail over.

After every fault `match:out` must hold exactly what an uninterrupted engine writes for the
commands in `match:in` (same seqs, no gap, no duplicate). The normal suite streams the
100,000 commands of issue 7 with 10 kills; a 300,000-command run with 40 kills is marked `soak`.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc

from coffer.localservices import RedisServer
from matcher import keys
from matcher.protocol import Command
from tests.matcher.streams import (
    assert_sequenced,
    expected_wire,
    read_in_commands,
    read_out,
    sharded_flow,
    start_runner,
    stop_process,
    wait_caught_up,
    xadd_batches,
)

M = "ETH-USDT"


def _with_resends(batches: list[list[Command]], rng: random.Random) -> list[list[Command]]:
    """The ledger re-sends its last batch after its own restarts: duplicates the engine must drop."""
    out: list[list[Command]] = []
    for i, b in enumerate(batches):
        out.append(b)
        if i >= 2 and rng.random() < 0.05:
            out.append(batches[i - rng.randint(1, 2)])
    return out


def _recoveries(log: Path) -> int:
    return log.read_text().count("recovered at seq") if log.exists() else 0


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


async def _wait_recovered(log: Path, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _recoveries(log) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("restarted runner did not take the lease and recover")


async def _kill_runner_while_streaming(url: str, tmp_path: Path, n: int, seed: int, kills: int) -> None:
    rng = random.Random(seed)
    cmds = sharded_flow(n, seed, shards=3)
    stream = _with_resends([cmds[i:i + 40] for i in range(0, len(cmds), 40)], rng)
    r = aioredis.Redis.from_url(url)
    log = tmp_path / "runner.log"
    lease_ms = 400
    proc = start_runner(url, M, log, snapshot_s=0.25, batch=50, lease_ms=lease_ms)
    done_kills = 0
    groups = list(range(0, len(stream), 10))
    pace_s = kills * 0.9 / len(groups)  # spread the input over the whole kill period
    try:
        async def produce() -> None:
            for i in groups:
                await xadd_batches(r, M, stream[i:i + 10])
                await asyncio.sleep(pace_s)

        producer = asyncio.create_task(produce())
        while done_kills < kills:
            # each kill lands while the runner leads and works, at a random moment
            await _wait_recovered(log, done_kills + 1)
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            proc.kill()
            proc.wait(10)
            done_kills += 1
            proc = start_runner(url, M, log, snapshot_s=0.25, batch=50, lease_ms=lease_ms)
        await producer
        await wait_caught_up(r, M, timeout_s=120)
        rows = await read_out(r, M)
        assert_sequenced(rows)
        assert rows == expected_wire(await read_in_commands(r, M))
        assert len(rows) > n
        text = log.read_text()
        assert text.count("recovered at seq") >= kills + 1
        replays = [int(part.split(" entries replayed")[0].rsplit("(", 1)[1])
                   for part in text.split("recovered at seq")[1:]]
        assert any(count > 0 for count in replays), "some restart replayed input after a snapshot"
    finally:
        stop_process(proc)
        await r.aclose()


@pytest.mark.asyncio
async def test_kill9_runner_while_100k_commands_stream(redis_url: str, tmp_path: Path) -> None:
    await _kill_runner_while_streaming(redis_url, tmp_path, n=100_000, seed=101, kills=10)


@pytest.mark.soak
@pytest.mark.asyncio
async def test_kill9_runner_soak_300k_commands(redis_url: str, tmp_path: Path) -> None:
    await _kill_runner_while_streaming(redis_url, tmp_path, n=300_000, seed=202, kills=40)


@pytest.mark.asyncio
async def test_failover_to_standby(redis_url: str, tmp_path: Path) -> None:
    cmds = sharded_flow(6000, 303, shards=2)
    batches = [cmds[i:i + 40] for i in range(0, len(cmds), 40)]
    r = aioredis.Redis.from_url(redis_url)
    a = start_runner(redis_url, M, tmp_path / "a.log", lease_ms=1000)
    b: subprocess.Popen[bytes] | None = None
    try:
        await xadd_batches(r, M, batches[:50])
        await wait_caught_up(r, M)
        first_token = await r.get(keys.lease(M))
        b = start_runner(redis_url, M, tmp_path / "b.log", lease_ms=1000)
        await asyncio.sleep(0.5)
        assert await r.get(keys.lease(M)) == first_token, "the standby waits while the leader lives"
        await xadd_batches(r, M, batches[50:100])
        await wait_caught_up(r, M)
        a.kill()
        a.wait(10)
        killed_at = time.monotonic()
        await xadd_batches(r, M, batches[100:])
        await wait_caught_up(r, M, timeout_s=30)
        took_over_s = time.monotonic() - killed_at
        assert await r.get(keys.lease(M)) not in (None, first_token)
        assert "leader with fencing token" in (tmp_path / "b.log").read_text()
        rows = await read_out(r, M)
        assert_sequenced(rows)
        assert rows == expected_wire(await read_in_commands(r, M))
        print(f"standby took over and caught up {took_over_s:.2f}s after the leader was killed (lease 1 s)")
    finally:
        stop_process(a)
        if b is not None:
            stop_process(b)
        await r.aclose()


async def _retry(fn: Any, *args: Any) -> Any:
    while True:
        try:
            return await fn(*args)
        except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError):
            await asyncio.sleep(0.1)


async def _redis_crashes(server: RedisServer, tmp_path: Path, shards: int) -> tuple[list[Any], list[int], int, int]:
    """Stream commands, crash Redis twice losing its unsynced AOF tail, re-forward like the ledger.

    The producer plays the ledger's intake consumers: after Redis is back it re-forwards every
    command above the engine's per-shard watermark from its checkpoint -- each shard's backlog
    in turn, as independent consumers would, not in the original interleaving. A settlement
    stand-in reads match:out throughout and applies each seq once, recording any seq that
    comes back with different content. Returns (final rows, mismatched seqs, lost input
    entries, settled seqs that the crashes lost).
    """
    url = server.url
    cmds = sharded_flow(12_000, 404, shards=shards)
    r = aioredis.Redis.from_url(url, socket_timeout=5)
    proc = start_runner(url, M, tmp_path / "runner.log", snapshot_s=0.3, batch=50)
    applied: dict[int, dict[str, Any]] = {}
    mismatches: list[int] = []
    stop = asyncio.Event()
    lost_entries = 0
    max_seq_lost = 0
    sent: list[Command] = []

    async def settle() -> None:
        import msgpack

        last_id = "0-0"
        while not stop.is_set():
            try:
                reply: Any = await r.xread({keys.match_out(M): last_id}, count=100, block=100)
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError):
                await asyncio.sleep(0.1)
                continue
            for entry_id, fields in reply[0][1] if reply else []:
                for row in msgpack.unpackb(fields[b"b"], raw=False):
                    seen = applied.get(row["seq"])
                    if seen is None:
                        applied[row["seq"]] = row
                    elif seen != row:
                        mismatches.append(row["seq"])
                last_id = entry_id.decode()

    async def produce(todo: list[Command]) -> None:
        for i in range(0, len(todo), 400):
            chunk = todo[i:i + 400]
            await xadd_batches(r, M, [chunk[j:j + 40] for j in range(0, len(chunk), 40)])
            sent.extend(chunk)
            await asyncio.sleep(0.01)

    async def backlog_above_watermarks() -> list[Command]:
        wm = {k: int(await _retry(r.hget, keys.checkpoint(M), keys.watermark_field(k)) or 0) for k in range(shards)}
        return sorted((c for c in sent if c.iid > wm[c.shard]), key=lambda c: (c.shard, c.iid))

    def incr_aof() -> Path:
        return max((server.directory / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime)

    settler = asyncio.create_task(settle())
    try:
        pos = 0
        for crash_at in (4000, 8000):
            await produce(cmds[pos:crash_at])
            await asyncio.sleep(0.3)
            aof = incr_aof()
            fsynced = aof.stat().st_size
            await produce(cmds[crash_at:crash_at + 1200])
            pos = crash_at + 1200
            await asyncio.sleep(0.4)  # the runner commits, settlement applies: then the crash loses it
            before = await r.xlen(keys.match_in(M))
            settled = max(applied, default=0)
            server.kill()
            # kill -9 alone keeps what Redis wrote to the OS; an OS crash with appendfsync everysec
            # loses the unsynced tail: cut the AOF back to a size it had a moment ago.
            _truncate(aof, fsynced)
            server.start()
            after = int(await _retry(r.xlen, keys.match_in(M)))
            lost_entries += before - after
            ck_seq = int(await _retry(r.hget, keys.checkpoint(M), "seq") or 0)
            max_seq_lost = max(max_seq_lost, settled - ck_seq)
            backlog = await backlog_above_watermarks()
            sent.clear()
            await produce(backlog)
        await produce(cmds[pos:])
        await wait_caught_up(r, M, timeout_s=60)
        rows = await read_out(r, M)
        assert_sequenced(rows)
        # whatever happened, the output is the deterministic replay of the durable input log
        assert rows == expected_wire(await read_in_commands(r, M))
        # and every command was applied exactly once
        assert len({(c.shard, c.iid) for c in await read_in_commands(r, M)}) == len(cmds)
        await asyncio.sleep(0.3)
        stop.set()
        await settler
        assert sorted(applied) == [row["seq"] for row in rows], "settlement saw every seq, no gap"
        return rows, mismatches, lost_entries, max_seq_lost
    finally:
        stop.set()
        if not settler.done():
            settler.cancel()
        stop_process(proc)
        await r.aclose()


@pytest.mark.asyncio
async def test_redis_kill9_and_aof_restart(fresh_redis: RedisServer, tmp_path: Path) -> None:
    """One intake shard: re-forwarding restores the original order, so settlement converges exactly."""
    rows, mismatches, lost, settled_lost = await _redis_crashes(fresh_redis, tmp_path, shards=1)
    assert lost > 0, "the crash really lost input"
    assert settled_lost > 0, "settlement had applied events that the crash lost from Redis"
    assert not mismatches, f"seqs came back with different content: {mismatches[:5]}"
    assert rows == expected_wire(sharded_flow(12_000, 404, shards=1)), "exactly the uninterrupted run"
    print(f"lost by the two crashes: {lost} match:in entries; {settled_lost} settled seqs regenerated identically")


@pytest.mark.asyncio
async def test_redis_kill9_with_three_intake_shards(fresh_redis: RedisServer, tmp_path: Path) -> None:
    """Three shards re-forwarded one after another: output stays gap-free, duplicate-free and a
    deterministic function of the durable input; but regenerated seqs may differ from what
    settlement applied before the crash (reported, not asserted) -- see the matcher report."""
    _rows, mismatches, lost, settled_lost = await _redis_crashes(fresh_redis, tmp_path, shards=3)
    assert lost > 0 and settled_lost > 0
    print(f"3 shards: lost {lost} input entries, {settled_lost} settled seqs; "
          f"{len(set(mismatches))} of them came back with different content")
