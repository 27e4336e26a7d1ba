"""Helpers for the runner tests: a producer that plays the ledger, output readers, runner processes."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from matcher import keys
from matcher.engine import Engine
from matcher.protocol import Command, PlaceOrder, encode_batch
from tests.matcher.flows import random_flow

REPO = Path(__file__).resolve().parents[2]


def sharded_flow(n: int, seed: int, shards: int) -> list[Command]:
    """`n` commands whose intake ids are per shard (each shard's iids increase from 1)."""
    rng = random.Random(seed)
    cmds = random_flow(rng, n, users=6)
    next_iid = dict.fromkeys(range(shards), 0)
    out: list[Command] = []
    for cmd in cmds:
        shard = rng.randrange(shards)
        next_iid[shard] += 1
        fields = {f: getattr(cmd, f) for f in cmd.__slots__}  # type: ignore[union-attr]
        fields.update(shard=shard, iid=next_iid[shard])
        out.append(type(cmd)(**fields))
    return out


def expected_wire(stream_cmds: list[Command]) -> list[dict[str, Any]]:
    """What an uninterrupted engine writes for commands in match:in order (watermark dedupe applied)."""
    engine = Engine()
    wm: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    for cmd in stream_cmds:
        if cmd.iid <= wm.get(cmd.shard, 0):
            continue
        wm[cmd.shard] = cmd.iid
        rows.extend(engine.apply_wire(cmd))
    return rows


async def read_out(r: Any, market: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    last = "-"
    while True:
        entries = await r.xrange(keys.match_out(market), min=last, max="+", count=1000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return rows
        for _entry_id, fields in entries:
            rows.extend(msgpack.unpackb(fields[b"b"], raw=False))
        last = entries[-1][0].decode()


async def read_in_commands(r: Any, market: str) -> list[Command]:
    from matcher.protocol import decode_commands

    cmds: list[Command] = []
    for _id, fields in await r.xrange(keys.match_in(market)):
        cmds.extend(decode_commands(fields[b"b"]))
    return cmds


async def xadd_batches(r: Any, market: str, batches: list[list[Command]]) -> None:
    pipe = r.pipeline(transaction=False)
    for batch in batches:
        pipe.xadd(keys.match_in(market), {"b": encode_batch(batch)})
    await pipe.execute()


async def wait_caught_up(r: Any, market: str, timeout_s: float = 60.0, task: asyncio.Task[Any] | None = None) -> None:
    """Until the checkpoint's input id is the last entry of match:in (fails early if `task` died)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if task is not None and task.done():
            task.result()
            raise AssertionError("the runner task returned before catching up")
        last = await r.xrevrange(keys.match_in(market), count=1)
        ck = await r.hget(keys.checkpoint(market), "in_id")
        if last and ck == last[0][0]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"runner did not catch up within {timeout_s}s")


def start_runner(url: str, market: str, log_path: Path, *, snapshot_s: float = 0.3, lease_ms: int = 1000,
                 batch: int = 200) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "coffer.cli", "matcher", "run", "--market", market, "--redis-url", url,
             "--snapshot-interval", str(snapshot_s), "--lease-ms", str(lease_ms), "--batch", str(batch),
             "--keep-input"],  # the tests compare the output with every command they find in match:in
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO,
        )


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def assert_sequenced(rows: list[dict[str, Any]]) -> None:
    seqs = [row["seq"] for row in rows]
    assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate in match:out seqs"


def is_place(cmd: Command) -> bool:
    return isinstance(cmd, PlaceOrder)
