"""The stream runner in-process: exactly-once output, dedupe, fencing, recovery from snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from matcher import keys
from matcher.engine import Engine
from matcher.errors import LeaseLostError
from matcher.protocol import WireEvent, decode_events, decode_wire_commands, encode_batch
from matcher.runner import MarketRunner, RunnerConfig
from tests.matcher.flows import random_flow
from tests.matcher.streams import (
    assert_sequenced,
    expected_wire,
    read_in_commands,
    read_out,
    sharded_flow,
    wait_caught_up,
    xadd_batches,
)

M = "BTC-USDT"


def _config(url: str, **kw: Any) -> RunnerConfig:
    # trim_input off: these tests compare the output with every command they find in match:in
    return RunnerConfig(markets=(M,), redis_url=url,
                        **{"snapshot_interval_s": 0.05, "lease_ms": 1000, "trim_input": False, **kw})


def test_wire_rows_equal_protocol_encoding() -> None:
    """The three forms of the engine's output write the same match:out bytes; the runner's form
    (wire Structs from wire commands) is checked against the dataclasses, the reference."""
    import msgpack

    engine_a, engine_b, engine_c = Engine(), Engine(), Engine()
    for cmd in random_flow(__import__("random").Random(3), 400):
        events = engine_a.apply(cmd)
        rows = engine_b.apply_wire(cmd)
        structs: list[WireEvent] = []
        (wire_cmd,) = decode_wire_commands(encode_batch([cmd]))
        engine_c.apply_into(wire_cmd, structs)
        assert decode_events(encode_batch(events)) == events
        assert msgpack.packb(rows, use_bin_type=True) == encode_batch(events)
        assert encode_batch(structs) == encode_batch(events)
    assert engine_a.seq == engine_b.seq == engine_c.seq


@pytest.mark.asyncio
async def test_runner_applies_dedupes_and_recovers(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = sharded_flow(3000, seed=11, shards=3)
        batches = [cmds[i:i + 25] for i in range(0, len(cmds), 25)]
        # the ledger re-sends some batches after a restart: those must be dropped by the watermark
        stream = []
        for i, b in enumerate(batches):
            stream.append(b)
            if i % 17 == 5:
                stream.append(batches[i - 3])
        runner = MarketRunner(r, M, _config(redis_url), stop)
        task = asyncio.create_task(runner.run())
        await xadd_batches(r, M, stream[:60])
        await wait_caught_up(r, M)
        # a second runner instance (a restart) recovers from snapshot + replay and goes on
        stop.set()
        await task
        assert await r.get(keys.lease(M)) is None, "clean stop releases the lease"
        assert await r.exists(keys.snapshot(M))
        stop = asyncio.Event()
        runner2 = MarketRunner(r, M, _config(redis_url), stop)
        task = asyncio.create_task(runner2.run())
        await xadd_batches(r, M, stream[60:])
        await wait_caught_up(r, M)
        stop.set()
        await task
        rows = await read_out(r, M)
        assert_sequenced(rows)
        want = expected_wire(await read_in_commands(r, M))
        assert rows == want
        assert len(rows) > len(cmds)
        ck = await r.hgetall(keys.checkpoint(M))
        assert int(ck[b"seq"]) == len(rows)
        assert int(ck[b"wm:0"]) > 0 and int(ck[b"wm:2"]) > 0
    finally:
        stop.set()
        await r.aclose()


@pytest.mark.asyncio
async def test_fenced_leader_cannot_write(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = random_flow(__import__("random").Random(5), 50)
        leader = MarketRunner(r, M, _config(redis_url), stop)
        assert await leader.acquire()
        standby = MarketRunner(r, M, _config(redis_url), stop)
        assert not await standby.acquire(), "lease is exclusive"
        await leader.recover()
        await xadd_batches(r, M, [cmds])
        # the lease expires (leader paused) and the standby takes over with a higher token
        await r.delete(keys.lease(M))
        assert await standby.acquire()
        assert int(standby.token) > int(leader.token)
        entries: Any = await r.xrange(keys.match_in(M))
        rows: list[WireEvent] = []
        prev_seq, prev_in = leader.engine.seq, leader.in_id
        for entry_id, fields in entries:
            leader._apply_entry(fields, rows)
            leader.in_id = entry_id.decode()
        with pytest.raises(LeaseLostError):
            await leader._commit_batch(prev_seq, prev_in, rows)
        assert await r.xlen(keys.match_out(M)) == 0
        assert await r.hget(keys.checkpoint(M), "seq") is None
    finally:
        await r.aclose()


@pytest.mark.asyncio
async def test_big_entries_commit_in_parts(redis_url: str) -> None:
    """Entries of thousands of commands (the ledger packs up to 5,000) split into bounded commits."""
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = sharded_flow(12_000, seed=21, shards=2)
        await xadd_batches(r, M, [cmds[i:i + 3000] for i in range(0, len(cmds), 3000)])
        runner = MarketRunner(r, M, _config(redis_url, max_events_per_commit=2000, out_chunk=700), stop)
        task = asyncio.create_task(runner.run())
        await wait_caught_up(r, M)
        stop.set()
        await task
        rows = await read_out(r, M)
        assert_sequenced(rows)
        assert rows == expected_wire(cmds)
        assert runner.commits >= 4, "one commit per big entry at least"
        assert await r.xlen(keys.match_out(M)) > runner.commits, "events split into several stream entries"
    finally:
        stop.set()
        await r.aclose()


@pytest.mark.asyncio
async def test_corrupt_snapshots_fall_back_to_full_replay_of_an_untrimmed_input(redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = sharded_flow(1500, seed=31, shards=1)
        await xadd_batches(r, M, [cmds[i:i + 50] for i in range(0, 750, 50)])
        task = asyncio.create_task(MarketRunner(r, M, _config(redis_url), stop).run())
        await wait_caught_up(r, M)
        stop.set()
        await task
        for key in (keys.snapshot(M), keys.snapshot_prev(M)):
            await r.hset(key, "engine", b"\x00garbage")
        stop = asyncio.Event()
        runner = MarketRunner(r, M, _config(redis_url), stop)
        task = asyncio.create_task(runner.run())
        await xadd_batches(r, M, [cmds[i:i + 50] for i in range(750, 1500, 50)])
        await wait_caught_up(r, M)
        stop.set()
        await task
        assert runner.commands == 1500, "the restart replayed every command from the start"
        rows = await read_out(r, M)
        assert_sequenced(rows)
        assert rows == expected_wire(cmds)
    finally:
        stop.set()
        await r.aclose()


@pytest.mark.asyncio
async def test_input_is_trimmed_behind_snapshots_and_a_corrupt_one_falls_back_to_the_previous(
        redis_url: str) -> None:
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = sharded_flow(2000, seed=37, shards=1)
        batches = [cmds[i:i + 20] for i in range(0, 2000, 20)]
        config = _config(redis_url, trim_input=True, snapshot_interval_s=0.01, batch=5)
        task = asyncio.create_task(MarketRunner(r, M, config, stop).run())
        for i in range(0, 50, 5):  # in small steps, so several snapshots are written along the way
            await xadd_batches(r, M, batches[i:i + 5])
            await wait_caught_up(r, M, task=task)
            await asyncio.sleep(0.02)
        stop.set()
        await task
        prev: Any = await r.hget(keys.snapshot_prev(M), "in_id")
        head: Any = await r.xrange(keys.match_in(M), count=1)
        first = head[0][0]
        assert prev is not None and first == prev, "match:in starts at the previous snapshot's input id"
        assert await r.xlen(keys.match_in(M)) < 50
        # the newest snapshot is unusable: recovery takes the previous one and replays after it
        await r.hset(keys.snapshot(M), "engine", b"\x00garbage")
        stop = asyncio.Event()
        runner = MarketRunner(r, M, config, stop)
        task = asyncio.create_task(runner.run())
        await xadd_batches(r, M, batches[50:])
        await wait_caught_up(r, M, task=task)
        stop.set()
        await task
        assert runner.commands < 2000  # it did not (could not) replay from the first command
        rows = await read_out(r, M)
        assert_sequenced(rows)
        assert rows == expected_wire(cmds), "the same output as one uninterrupted run"
    finally:
        stop.set()
        await r.aclose()


@pytest.mark.asyncio
async def test_a_forked_snapshot_lands_while_the_leader_goes_on(redis_url: str) -> None:
    """Periodic snapshots are written by a forked child (`snapshot_in_child`, the default): one
    lands while the runner is still leading, it is at most as new as the checkpoint, it restores,
    and the output is the same as always."""
    market = "FORK-USDT"
    r = aioredis.Redis.from_url(redis_url)
    stop = asyncio.Event()
    try:
        cmds = sharded_flow(1500, seed=41, shards=2)
        config = RunnerConfig(markets=(market,), redis_url=redis_url, snapshot_interval_s=0.02, lease_ms=1000,
                              trim_input=False)
        assert config.snapshot_in_child
        runner = MarketRunner(r, market, config, stop)
        task = asyncio.create_task(runner.run())
        for i in range(0, 1500, 100):
            await xadd_batches(r, market, [cmds[i:i + 100]])
            await wait_caught_up(r, market, task=task)
            await asyncio.sleep(0.03)
        async with asyncio.timeout(10):
            while not await r.exists(keys.snapshot(market)):  # noqa: ASYNC110 - polls Redis
                await asyncio.sleep(0.02)
        assert not task.done(), "the snapshot landed while the runner still leads"
        snap: Any = await r.hgetall(keys.snapshot(market))
        ckpt_seq = int(await r.hget(keys.checkpoint(market), "seq"))  # type: ignore[misc]
        assert 0 < int(snap[b"seq"]) <= ckpt_seq
        assert Engine.restore(snap[b"engine"]).seq == int(snap[b"seq"])
        stop.set()
        await task
        assert runner._snap_child is None, "the writer was reaped"
        rows = await read_out(r, market)
        assert_sequenced(rows)
        assert rows == expected_wire(cmds)
    finally:
        stop.set()
        await r.aclose()


@pytest.mark.asyncio
async def test_the_snapshot_script_never_goes_back_nor_ahead_of_the_checkpoint(redis_url: str) -> None:
    """A snapshot older than the checkpoint is written (recovery replays after it), one not newer
    than the snapshot stored is not (2), one ahead of the checkpoint is refused (-1), and one from
    a runner whose lease is gone is refused (0)."""
    from matcher.runner import _SNAPSHOT

    market = "SNAPRULES-USDT"
    r = aioredis.Redis.from_url(redis_url)
    try:
        script = r.register_script(_SNAPSHOT)
        snap_keys = [keys.lease(market), keys.snapshot(market), keys.checkpoint(market), keys.match_in(market),
                     keys.snapshot_prev(market)]
        await r.set(keys.lease(market), "7")
        await r.hset(keys.checkpoint(market), "seq", 10)  # type: ignore[misc]

        async def write(seq: int, lease_holder: str = "7") -> Any:
            return await script(keys=snap_keys, args=[lease_holder, Engine().snapshot(), "0-0", b"\x80", seq, 0])

        assert await write(8) == 1
        assert await write(5) == 2
        assert int(await r.hget(keys.snapshot(market), "seq")) == 8  # type: ignore[misc]
        assert await write(12) == -1
        assert await write(9, lease_holder="6") == 0
        assert await write(10) == 1
        assert int(await r.hget(keys.snapshot_prev(market), "seq")) == 8  # type: ignore[misc]
    finally:
        await r.aclose()
