"""Benchmark: the stream runner's commands/s through a private Redis, next to that Redis's raw XADD rate.

It starts its own `redis-server` (AOF on, appendfsync everysec, in a temp dir, on a free port),
then in one run measures:

- `xadd_pipelined_per_s`: small single-field XADDs pipelined 1,000 at a time from one client
  (the ceiling for anything that writes one stream entry per item);
- `runner_commands_per_s`: a `MarketRunner` draining a preloaded `match:in{M}` of N commands
  (entries of `--per-entry` commands, the seeded mixed flow of bench.matcher_core), from its start
  (lease, recovery) until its checkpoint reaches the last entry, with every batch committed by the
  fenced script (events + checkpoint) and periodic snapshots on;
- `runner_events_per_s`: the events it wrote to `match:out{M}` in that time;
- `cpu_s` / `cpu_us_per_command`: this process's CPU time over that drain (the runner, plus the
  bench's checkpoint polling; the Redis server is another process), steadier than the wall-clock
  rates on a shared machine.

Run: `python -m bench.matcher_stream [--commands N] [--per-entry K]`; last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.matcher_core import mixed_flow
from coffer.localservices import RedisServer
from matcher import keys
from matcher.protocol import encode_batch
from matcher.runner import MarketRunner, RunnerConfig

MARKET = "BENCH-USDT"


async def _xadd_rate(r: Any, n: int) -> float:
    key = "bench:xadd{x}"
    payload = {"b": b"x" * 64}
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        pipe = r.pipeline(transaction=False)
        for _ in range(min(1000, n - start)):
            pipe.xadd(key, payload)
        await pipe.execute()
    dt = time.perf_counter() - t0
    await r.delete(key)
    return n / dt


async def _preload(r: Any, n: int, per_entry: int) -> None:
    cmds = mixed_flow(n, seed=7)
    for start in range(0, n, per_entry * 200):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(start + per_entry * 200, n), per_entry):
            pipe.xadd(keys.match_in(MARKET), {"b": encode_batch(cmds[i:i + per_entry])})
        await pipe.execute()


async def _runner_rate(r: Any, url: str, n: int, per_entry: int, batch: int, snapshot_s: float) -> dict[str, Any]:
    await _preload(r, n, per_entry)
    gc.collect()  # the flow's N command objects are gone, as in a runner process: no GC work over them
    last = (await r.xrevrange(keys.match_in(MARKET), count=1))[0][0]
    config = RunnerConfig(markets=(MARKET,), redis_url=url, snapshot_interval_s=snapshot_s, batch=batch)
    stop = asyncio.Event()
    runner = MarketRunner(r, MARKET, config, stop)
    t0 = time.perf_counter()
    c0 = time.process_time()
    task = asyncio.create_task(runner.run())
    while True:  # poll the checkpoint: it is the runner's only observable progress
        if await r.hget(keys.checkpoint(MARKET), "in_id") == last:
            break
        await asyncio.sleep(0.005)
    dt = time.perf_counter() - t0
    cpu = time.process_time() - c0
    stop.set()
    await task
    seq = int(await r.hget(keys.checkpoint(MARKET), "seq"))
    return {"runner_commands_per_s": round(n / dt), "runner_events_per_s": round(seq / dt), "events": seq,
            "runner_commits": runner.commits, "seconds": round(dt, 3), "cpu_s": round(cpu, 3),
            "cpu_us_per_command": round(cpu / n * 1e6, 2)}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    import redis.asyncio as aioredis

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-redis-"))
    server = RedisServer(tmp)
    server.start()
    try:
        r = aioredis.Redis.from_url(server.url)
        try:
            xadd = await _xadd_rate(r, args.xadds)
            result = await _runner_rate(r, server.url, args.commands, args.per_entry, args.batch,
                                        args.snapshot_interval)
        finally:
            await r.aclose()
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"bench": "matcher_stream", "commands": args.commands, "per_entry": args.per_entry, "batch": args.batch,
            "snapshot_interval_s": args.snapshot_interval,
            **result, "xadd_pipelined_per_s": round(xadd),
            "redis": "private redis-server, appendonly yes, appendfsync everysec",
            "note": "2-core machine shared with the whole team while measured; figures are depressed"}


def main() -> None:
    parser = argparse.ArgumentParser(description="matcher runner throughput through a private Redis")
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--per-entry", type=int, default=100, help="commands per match:in entry")
    parser.add_argument("--batch", type=int, default=50, help="entries per XREAD")
    parser.add_argument("--xadds", type=int, default=100_000)
    parser.add_argument("--snapshot-interval", type=float, default=1.0, help="seconds between snapshots")
    args = parser.parse_args()
    from coffer.event_loop import install

    loop_name = install()  # as the coffer processes do (coffer/event_loop.py)
    print(json.dumps({**asyncio.run(_main(args)), "event_loop": loop_name}))


if __name__ == "__main__":
    main()
