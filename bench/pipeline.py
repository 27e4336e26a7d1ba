"""Benchmark of the whole order path: intake{k} -> ledger intake -> matcher -> settlement in PostgreSQL.

`python -m bench.pipeline` starts a private Redis (AOF, appendfsync everysec) and a private
PostgreSQL (fsync=off, full_page_writes=off: figures for the software path, not the disk),
migrates, seeds the demo markets and funds many users, then runs `coffer ledger run` (intake, and
settlement + withdrawals, in two processes) and `coffer matcher run` (BTC-USDT, ETH-USDT, ETH-BTC)
as child processes, as `coffer up` does (`--ledger-procs 1`: one ledger process).
The generator writes a seeded mixed flow (about 60% resting limits, 25% crossing limits and
market orders, 15% cancels by client order id) straight into the `intake{k}` streams, batched
per XADD entry as ledger/intake_protocol.py allows, in three phases:

1. `redis_xadd_per_s`: pipelined XADD of small entries into a scratch stream of this Redis;
2. latency, after a warm-up at the low rate (`--warmup-s`, default 2 s, not measured: in a fresh
   stack the first orders meet statements not yet prepared on each pooled connection and cold
   caches, which alone put the low-load p99 above 60 ms): first at a low offered load
   (`--low-rate`, default 500/s: `low_load_p50_ms`, `low_load_p99_ms`), then at a moderate one
   (`--latency-rate`, default 5,000/s, for `--latency-s`): for each order, from its intake
   timestamp to the moment the settlement's first non-pending `order` event for it arrives
   (published right after the settlement commit), heard through a pattern subscription to the
   user-event channels (so the ledger publishes every user's events; `--latency-listeners N`
   listens to users 1..N only and measures their orders): `p50_ms`, `p99_ms`. The listener
   parses the raw pub/sub stream with hiredis (bench/pubsub_listener.py): through redis-py's
   PubSub it took about 60% of a core at 5,000 orders/s, which the system under test then lacked
   (p50 30-100 ms instead of about 16). Where the time goes: `intake_to_match_in_*` and
   `intake_to_match_out_*` (from the stream entries' Redis times), for both latency phases;
3. throughput (`--throughput-s`, default 30). The flow is generated and encoded before the
   phase's clock starts (`--prebuild` requests, default 1,500,000; more are generated on the way
   if needed), so the load generator takes little of the 2 cores from the system it measures
   (generating while sending, it took about 15% of them). `--online-users` users (default 200,
   a tenth) are subscribed to their event channels meanwhile, as WebSocket users would be: the
   ledger publishes user events only to users who listen. Then as fast as the system takes
   them, with at most `--max-backlog` requests not yet consumed by the intake and at most as many
   orders not yet settled (so the rate is sustained, not a burst and a long drain); then wait
   until every order left `pending` in PostgreSQL. `orders_per_s` = orders placed in the phase /
   (time from the first send to the last order settled); `offered_per_s` = requests written /
   send time.

The last line is one JSON object. The machine is shared while this runs: figures are as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

MARKETS = ("BTC-USDT", "ETH-USDT", "ETH-BTC")
# market -> (mid price in ticks, tick decimals, lot decimals, min lots, max lots, quote ledger decimals);
# every demo market has quote_units_per_tick_lot = 1
SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "BTC-USDT": (300_000, 1, 5, 100, 1_000, 6),  # 30000.0 USDT, 0.001..0.01 BTC
    "ETH-USDT": (200_000, 2, 4, 100, 1_000, 6),  # 2000.00 USDT, 0.01..0.1 ETH
    "ETH-BTC": (5_000, 5, 3, 10, 100, 8),  # 0.05000 BTC, 0.01..0.1 ETH
}
FUNDING = {"BTC": 100_000 * 10**8, "ETH": 1_000_000 * 10**9, "USDT": 10**9 * 10**6}


def _dec(units: int, decimals: int) -> str:
    if decimals == 0:
        return str(units)
    whole, frac = divmod(units, 10**decimals)
    return f"{whole}.{frac:0{decimals}d}"


@dataclass
class Flow:
    """A seeded mixed flow of intake requests."""

    users: int
    shards: int
    seed: int
    rng: random.Random = field(init=False)
    n: int = 0
    live: dict[int, deque[tuple[str, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def next(self, ts_ms: int) -> tuple[int, Any, bool]:
        """`(user, request, is_place)`."""
        from ledger.intake_protocol import CancelRequest, PlaceOrderRequest

        rng = self.rng
        user = rng.randint(1, self.users)
        self.n += 1
        roll = rng.random()
        mine = self.live.get(user)
        if roll < 0.15 and mine:
            market, coid = mine.popleft()
            return user, CancelRequest(rid="", reply_to="", user=user, market=market, ts_ms=ts_ms,
                                       client_order_id=coid), False
        market = MARKETS[rng.randrange(3)]
        mid, tick_dec, lot_dec, lo, hi, quote_dec = SHAPES[market]
        side: Literal["buy", "sell"] = "buy" if rng.random() < 0.5 else "sell"
        lots = rng.randint(lo, hi)
        coid = f"b{self.n}"
        if roll < 0.75:  # resting: away from the mid on its own side
            off = rng.randint(1, 200)
            price = mid - off if side == "buy" else mid + off
            req = PlaceOrderRequest(rid="", reply_to="", user=user, market=market, side=side, type="limit",
                                    price=_dec(price, tick_dec), qty=_dec(lots, lot_dec), funds=None, ts_ms=ts_ms,
                                    client_order_id=coid)
            self.live.setdefault(user, deque(maxlen=50)).append((market, coid))
        elif roll < 0.92:  # crossing limit, IOC so the book does not grow on the far side
            off = rng.randint(0, 100)
            price = mid + off if side == "buy" else mid - off
            req = PlaceOrderRequest(rid="", reply_to="", user=user, market=market, side=side, type="limit",
                                    price=_dec(price, tick_dec), qty=_dec(lots, lot_dec), funds=None, ts_ms=ts_ms,
                                    client_order_id=coid, tif="IOC")
        elif side == "sell":  # market sell by quantity
            req = PlaceOrderRequest(rid="", reply_to="", user=user, market=market, side=side, type="market",
                                    price=None, qty=_dec(lots, lot_dec), funds=None, ts_ms=ts_ms,
                                    client_order_id=coid, tif="IOC")
        else:  # market buy by quote amount (about `lots` at the mid)
            req = PlaceOrderRequest(rid="", reply_to="", user=user, market=market, side=side, type="market",
                                    price=None, qty=None, funds=_dec(mid * lots, quote_dec), ts_ms=ts_ms,
                                    client_order_id=coid, tif="IOC")
        return user, req, True


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _setup_db(db_url: str, users: int) -> None:
    import asyncpg

    from coffer import migrate
    from ledger.demo import seed_demo
    from ledger.deposits import credit_deposit

    conn = await asyncpg.connect(db_url)
    try:
        await migrate.apply(conn)
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract="0x" + "22" * 20)
            await conn.execute("INSERT INTO users (id) SELECT generate_series(1, $1::bigint)", users)
            for user in range(1, users + 1):
                for asset, amount in FUNDING.items():
                    await credit_deposit(conn, deposit_key=f"bench-{asset}-{user}", user_id=user, asset=asset,
                                         amount=amount, txid=f"bench{user}", output_index=0)
    finally:
        await conn.close()


async def _xadd_rate(redis: Any, n: int = 100_000, pipe_size: int = 1000) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, pipe_size):
        pipe = redis.pipeline(transaction=False)
        for i in range(start, start + pipe_size):
            pipe.xadd("bench:xadd-scratch", {b"b": b"x" * 64, b"i": i})
        await pipe.execute()
    rate = n / (time.perf_counter() - t0)
    await redis.delete("bench:xadd-scratch")
    return rate


class Sender:
    """Batches requests per shard into XADD entries of up to `per_entry` requests."""

    def __init__(self, redis: Any, shards: int, per_entry: int) -> None:
        self.redis = redis
        self.shards = shards
        self.per_entry = per_entry
        self.sent = 0
        self.ids: list[list[tuple[int, int]]] = [[] for _ in range(shards)]  # entry ids, in order
        self.cums: list[list[int]] = [[] for _ in range(shards)]  # requests up to and with that entry

    def encode(self, requests: list[tuple[int, Any]]) -> list[tuple[int, bytes, int]]:
        """`requests` as XADD entries: `(shard, payload, requests in it)`, in send order."""
        from ledger.intake_protocol import encode_requests, shard_for_user

        per_shard: list[list[Any]] = [[] for _ in range(self.shards)]
        for user, req in requests:
            per_shard[shard_for_user(user, self.shards)].append(req)
        return [(k, encode_requests(reqs[i:i + self.per_entry]), len(reqs[i:i + self.per_entry]))
                for k, reqs in enumerate(per_shard) for i in range(0, len(reqs), self.per_entry)]

    async def send(self, requests: list[tuple[int, Any]]) -> None:
        await self.send_encoded(self.encode(requests))

    async def send_encoded(self, entries: list[tuple[int, bytes, int]]) -> None:
        from ledger.intake import stream_id_key
        from ledger.intake_protocol import BATCH_FIELD, intake_stream

        pipe = self.redis.pipeline(transaction=False)
        for k, payload, _count in entries:
            pipe.xadd(intake_stream(k), {BATCH_FIELD: payload})
        ids = await pipe.execute()
        for (k, _payload, count), entry_id in zip(entries, ids, strict=True):
            self.ids[k].append(stream_id_key(entry_id.decode()))
            self.cums[k].append((self.cums[k][-1] if self.cums[k] else 0) + count)
            self.sent += count

    async def consumed(self, pool: Any) -> int:
        """Requests the intake consumers have committed (from their stored offsets)."""
        from ledger.intake import stream_id_key

        total = 0
        for row in await pool.fetch("SELECT shard, stream_id FROM intake_offsets"):
            k = int(row["shard"])
            if k >= self.shards:
                continue
            idx = bisect.bisect_right(self.ids[k], stream_id_key(row["stream_id"])) - 1
            total += self.cums[k][idx] if idx >= 0 else 0
        return total


async def _latency_phase(redis_url: str, sender: Sender, flow: Flow, rate: int, seconds: float,
                         listeners: int) -> list[float]:
    """Latencies of the placements of users 1..`listeners` (every user's with `listeners` 0, heard
    through a pattern subscription, so the ledger then publishes every user's events)."""
    from bench.pubsub_listener import Listener
    from ledger.intake_protocol import decode_user_events, user_events_channel

    seen: set[int] = set()
    latencies: list[float] = []
    watched = listeners if listeners > 0 else flow.users

    def on_message(_channel: bytes, data: bytes) -> None:
        now_ms = time.time_ns() / 1e6
        for ev in decode_user_events(data).get("events", ()):
            if ev.get("type") == "order" and ev.get("state") != "pending":
                oid = int(ev["order_id"])
                if oid not in seen:
                    seen.add(oid)
                    latencies.append(now_ms - int(ev["ts_ms"]))

    listener = Listener(redis_url, on_message)
    if listeners > 0:
        await listener.start(channels=[user_events_channel(u) for u in range(1, listeners + 1)])
    else:
        await listener.start(pattern="user:events:*")
    tick_s = 0.01
    per_tick = max(1, int(rate * tick_s))
    t0 = time.perf_counter()
    placed = 0
    ticks = int(seconds / tick_s)
    for i in range(ticks):
        ts = _now_ms()
        batch = []
        for _ in range(per_tick):
            user, req, is_place = flow.next(ts)
            batch.append((user, req))
            placed += is_place and user <= watched
        await sender.send(batch)
        delay = t0 + (i + 1) * tick_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    deadline = time.monotonic() + 60
    while len(seen) < placed and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a counter
        await asyncio.sleep(0.1)
    await listener.close()
    return latencies


async def _unsettled(pool: Any, low: int) -> tuple[int, int]:
    """`(lowest pending order id or 0, highest order id)`: orders between them are (mostly) not yet
    settled. Cheap: a primary-key range scan from `low`, the previous lowest pending id."""
    row = await pool.fetchrow(
        "SELECT (SELECT min(id) FROM orders WHERE id >= $1 AND state = 'pending') AS lo, "
        "(SELECT coalesce(max(id), 0) FROM orders) AS hi", low)
    return int(row["lo"] or 0), int(row["hi"])


def _prebuild(sender: Sender, flow: Flow, requests: int, chunk: int) -> list[tuple[list[tuple[int, bytes, int]], int]]:
    """The throughput phase's flow, generated and encoded before its clock starts: `(entries,
    orders placed in them)` per send of `chunk` requests. The load generator's own work then does
    not take the 2 cores from the system it measures; `ts_ms` is the generation time."""
    out = []
    for _ in range(0, requests, chunk):
        ts = _now_ms()
        batch, placed = [], 0
        for _ in range(chunk):
            user, req, is_place = flow.next(ts)
            batch.append((user, req))
            placed += is_place
        out.append((sender.encode(batch), placed))
    return out


@contextlib.asynccontextmanager
async def _online(redis_url: str, users: int) -> AsyncIterator[list[int]]:
    """Users 1..`users` online during the throughput phase, as WebSocket users are: one
    connection SUBSCRIBEd to their event channels, counting the messages (yields the count, as a
    one-item list). The ledger builds and publishes user events only for users with a subscriber
    (ledger/online.py), so with nobody listening the phase would not pay for events at all."""
    from bench.pubsub_listener import Listener
    from ledger.intake_protocol import user_events_channel

    received = [0]
    if users <= 0:
        yield received
        return

    def on_message(_channel: bytes, _data: bytes) -> None:
        received[0] += 1

    listener = Listener(redis_url, on_message)
    await listener.start(channels=[user_events_channel(u) for u in range(1, users + 1)])
    try:
        yield received
    finally:
        await listener.close()


async def _throughput_phase(pool: Any, sender: Sender, flow: Flow, seconds: float, max_backlog: int,
                            chunk: int, prebuilt: int, meter: CpuMeter) -> dict[str, Any]:
    """Offer as fast as the system takes it: at most `max_backlog` requests not yet consumed by the
    intake AND at most `max_backlog` orders not yet settled, so the rate is sustained, not a burst
    followed by a long drain. The first `prebuilt` requests are generated before the clock starts;
    if the system takes more, the rest are generated on the way."""
    ready = deque(_prebuild(sender, flow, prebuilt, chunk))
    base_sent = sender.sent
    cpu0 = time.process_time()
    wal0 = await pool.fetchval("SELECT pg_current_wal_lsn()::text")
    start_max_id = await pool.fetchval("SELECT coalesce(max(id), 0) FROM orders")
    low = start_max_id
    # the phase's orders: above each shard's intake id at the start (a shard's order ids increase,
    # but the shards draw them in blocks, so ids alone do not separate the phase's orders)
    start_iids = [(int(r["shard"]), int(r["last_iid"])) for r in await pool.fetch(
        "SELECT shard, last_iid FROM intake_offsets")]
    mark0 = meter.mark()
    t0 = time.perf_counter()
    placed = 0
    consumed = await sender.consumed(pool)
    unsettled = 0
    last_check = 0.0
    waits = 0
    waits_intake = 0
    generated_live = 0
    while time.perf_counter() - t0 < seconds:
        now = time.perf_counter()
        if now - last_check > 0.2 or sender.sent - consumed > max_backlog or unsettled > max_backlog:
            last_check = now
            consumed = await sender.consumed(pool)
            lo, hi = await _unsettled(pool, low)
            low = lo or hi
            unsettled = hi - lo + 1 if lo else 0
            if sender.sent - consumed > max_backlog or unsettled > max_backlog:
                waits += 1
                waits_intake += sender.sent - consumed > max_backlog
                # two PostgreSQL reads per check: checked every 10 ms, they took about 4 s of the
                # server's CPU in a 30 s phase, from the system under test (a full backlog lasts
                # over a second at these rates, so 50 ms leaves the system no time idle)
                await asyncio.sleep(0.05)
                continue
        if ready:
            entries, n_placed = ready.popleft()
        else:
            (entries, n_placed), = _prebuild(sender, flow, chunk, chunk)
            generated_live += chunk
        await sender.send_encoded(entries)
        placed += n_placed
        await asyncio.sleep(0)
    send_s = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    offered = sender.sent - base_sent
    # wait until every order of the phase is settled (left `pending`) and counted
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        # the intake's offset first: it commits with its orders, so a count taken after it has
        # consumed everything holds every order of the phase (counted the other way round, a batch
        # committed between the two reads was missing from the count: 18,600 orders once)
        consumed = await sender.consumed(pool)
        lo, hi = await _unsettled(pool, low)  # cheap: the full count below scans the phase's orders
        low = lo or hi
        if consumed < sender.sent or lo:
            await asyncio.sleep(0.05)
            continue
        row = await pool.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'pending') AS pending FROM orders o "
            "JOIN unnest($1::int[], $2::bigint[]) AS s(shard, iid0) ON o.shard = s.shard AND o.iid > s.iid0",
            [k for k, _ in start_iids], [i for _, i in start_iids])
        if int(row["pending"]) == 0:
            break
        await asyncio.sleep(0.05)
    total_s = time.perf_counter() - t0
    _s, cpu, busy = CpuMeter.between(mark0, meter.mark())
    settled = int(row["n"]) - int(row["pending"])
    wal_bytes = int(await pool.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", wal0))
    return {"orders_per_s": round(settled / total_s, 1), "offered_per_s": round(offered / send_s, 1),
            "throughput_window_s": round(total_s, 2), "send_s": round(send_s, 2), "orders_settled": settled,
            "orders_placed": placed, "requests_offered": offered, "drain_s": round(total_s - send_s, 2),
            "backpressure_waits": waits, "backpressure_waits_on_intake": waits_intake,
            "requests_generated_during_phase": generated_live,
            "bench_client_send_cpu_s": round(client_cpu, 1),
            "postgres_wal_bytes_per_order": round(wal_bytes / max(1, placed)),
            "throughput_machine_busy_pct": busy,
            "throughput_cpu_us_per_order": {**{k: round(1e6 * v / max(1, settled), 1) for k, v in cpu.items()},
                                            "all": round(1e6 * sum(cpu.values()) / max(1, settled), 1)}}


async def _hops(redis: Any, t0_ms: int, t1_ms: int) -> dict[str, float]:
    """Median delay from the intake timestamp to the forwarded command (`match:in` entry time) and
    to the engine's output (`match:out` entry time), for items stamped in [t0_ms, t1_ms]: where the
    time goes along the path (stream entry ids carry the Redis server's clock in ms)."""
    from matcher import keys
    from matcher.protocol import decode_commands, decode_events

    to_in: list[float] = []
    to_out: list[float] = []
    for market in MARKETS:
        for stream, sink, decode in ((keys.match_in(market), to_in, decode_commands),
                                     (keys.match_out(market), to_out, decode_events)):
            for entry_id, fields in await redis.xrange(stream, min=f"{t0_ms}-0"):
                entry_ms = int(entry_id.split(b"-")[0])
                for item in decode(fields[b"b"]):
                    if t0_ms <= item.ts_ms <= t1_ms:
                        sink.append(entry_ms - item.ts_ms)
    return {"intake_to_match_in_p50_ms": _pct(to_in, 0.5), "intake_to_match_in_p99_ms": _pct(to_in, 0.99),
            "intake_to_match_out_p50_ms": _pct(to_out, 0.5), "intake_to_match_out_p99_ms": _pct(to_out, 0.99)}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server and its children: the process itself (with the children it has
    reaped) plus every live child (PostgreSQL's backends). Linux /proc."""
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        proc_pid, ppid = int(stat.parent.name), int(fields[1])
        if proc_pid == pid:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        elif ppid == pid:
            total += int(fields[11]) + int(fields[12])
    return total / tck


class CpuMeter:
    """CPU seconds of each process of the system under test, and how busy the whole machine was,
    between two marks (Linux /proc): where a phase's cores went."""

    def __init__(self, procs: dict[str, tuple[int, bool]]) -> None:
        self.procs = procs  # name -> (pid, with its children: a server and its backends)

    def mark(self) -> tuple[float, dict[str, float], tuple[int, int]]:
        cpu = {name: _tree_cpu_s(pid) if tree else _cpu_s(pid) for name, (pid, tree) in self.procs.items()}
        jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = jiffies[3] + jiffies[4]  # idle, iowait
        return time.perf_counter(), cpu, (sum(jiffies) - idle, sum(jiffies))

    @staticmethod
    def between(a: tuple[float, dict[str, float], tuple[int, int]],
                b: tuple[float, dict[str, float], tuple[int, int]]) -> tuple[float, dict[str, float], float]:
        """(seconds, CPU seconds per process, share of the machine's cores busy, in %)."""
        busy, total = b[2][0] - a[2][0], b[2][1] - a[2][1]
        return (b[0] - a[0], {name: b[1][name] - a[1][name] for name in b[1]},
                round(100 * busy / total, 1) if total else float("nan"))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _measure(args: argparse.Namespace, db_url: str, redis_url: str,
                   procs: list[subprocess.Popen[bytes]], meter: CpuMeter) -> dict[str, Any]:
    import asyncpg
    import redis.asyncio as aioredis

    redis = aioredis.from_url(redis_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        xadd_rate = await _xadd_rate(redis)
        await asyncio.sleep(2.0)  # consumers and runners start and take their leases
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a service exited at start; see its log")
        sender = Sender(redis, args.shards, args.per_entry)
        listeners = args.latency_listeners
        flow = Flow(args.users, args.shards, args.seed)
        low: list[float] = []
        hops: dict[str, float] = {}
        if args.warmup_s > 0:  # discarded: the first orders meet unprepared statements and cold caches
            await _latency_phase(redis_url, sender, flow, args.low_rate or 500, args.warmup_s, listeners)
        if args.low_rate:
            t0_ms = _now_ms()
            low = await _latency_phase(redis_url, sender, flow, args.low_rate, args.latency_s / 2, listeners)
            hops = {f"low_load_{k}": v for k, v in (await _hops(redis, t0_ms, _now_ms())).items()}
        t0_ms = _now_ms()
        mark0 = meter.mark()
        latencies = await _latency_phase(redis_url, sender, flow, args.latency_rate, args.latency_s, listeners)
        phase_s, cpu, busy = CpuMeter.between(mark0, meter.mark())
        hops.update(await _hops(redis, t0_ms, _now_ms()))
        where = {"latency_machine_busy_pct": busy, "latency_cores": {k: round(v / phase_s, 2) for k, v in cpu.items()}}
        async with _online(redis_url, args.online_users) as received:
            result = await _throughput_phase(pool, sender, flow, args.throughput_s, args.max_backlog, args.chunk,
                                              args.prebuild, meter)
        result["online_users"] = args.online_users
        result["user_event_messages_received"] = received[0]
    finally:
        await pool.close()
        await redis.aclose()
    return {
        **result,
        "p50_ms": round(_pct(latencies, 0.50), 2), "p99_ms": round(_pct(latencies, 0.99), 2),
        "warmup_s": args.warmup_s, "latency_offered_per_s": args.latency_rate, "latency_samples": len(latencies),
        "low_load_offered_per_s": args.low_rate, "low_load_p50_ms": round(_pct(low, 0.50), 2),
        "low_load_p99_ms": round(_pct(low, 0.99), 2), **hops, **where,
        "redis_xadd_per_s": round(xadd_rate, 1),
        "users": args.users, "markets": len(MARKETS), "intake_shards": args.shards,
        "requests_per_entry": args.per_entry, "seed": args.seed,
        "latency_listeners": listeners or "all users (pattern subscription)",
        "settings": "redis appendfsync everysec; postgres fsync=off full_page_writes=off; 2 shared cores",
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from coffer.localservices import PostgresServer, RedisServer
    from coffer.supervisor import terminate_groups

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-"))
    tmp.chmod(0o755)
    redis_server = RedisServer(tmp / "redis", appendfsync="everysec")
    pg_server = PostgresServer(tmp / "pg", fast_unsafe=True)
    procs: list[subprocess.Popen[bytes]] = []
    redis_server.start()
    pg_server.start()
    try:
        db_url = pg_server.url("postgres")
        asyncio.run(_setup_db(db_url, args.users))
        assert pg_server.proc is not None and redis_server.proc is not None
        pg_cpu0, redis_cpu0 = _tree_cpu_s(pg_server.proc.pid), _cpu_s(redis_server.proc.pid)
        env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_REDIS_URL": redis_server.url,
               "COFFER_INTAKE_SHARDS": str(args.shards), "COFFER_LOG_LEVEL": "WARNING"}
        logs = tmp / "logs"
        logs.mkdir()
        ledgers = ([("ledger", ["ledger", "run"])] if args.ledger_procs == 1 else
                   [("ledger-intake", ["ledger", "run", "--roles", "intake"]),
                    ("ledger-settlement", ["ledger", "run", "--roles", "settlement,withdrawals"])])
        for name, argv in (*ledgers,
                           # --keep-input: the hop diagnostics read match:in entries of the latency phase
                           ("matcher", ["matcher", "run", "--keep-input",
                                        *[a for m in MARKETS for a in ("--market", m)]])):
            # the intake logs at INFO: its stop line counts the batches decided without a read
            level = {"COFFER_LOG_LEVEL": "INFO"} if name in ("ledger", "ledger-intake") else {}
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "coffer", *argv], env={**env, **level}, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        names = [name for name, _argv in ledgers] + ["matcher"]
        meter = CpuMeter({**{name: (p.pid, False) for name, p in zip(names, procs, strict=True)},
                          "bench_client": (os.getpid(), False), "postgres": (pg_server.proc.pid, True),
                          "redis": (redis_server.proc.pid, False)})
        result = asyncio.run(_measure(args, db_url, redis_server.url, procs, meter))
        # where the CPU went (the whole run, setup excluded for the children)
        result["ledger_processes"] = len(ledgers)
        setup = {"postgres": pg_cpu0, "redis": redis_cpu0}  # the servers from the end of setup
        result["cpu_s"] = {name: round(cpu - setup.get(name, 0.0), 1) for name, cpu in meter.mark()[1].items()}
        result["cpu_s_note"] = ("whole run (both latency phases and the throughput phase); postgres and redis from "
                                "the start of the services' work, setup excluded; 2 cores = 2 CPU-seconds per second")
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        terminate_groups(procs)
        result["intake_stop_line"] = _intake_stop_line(logs / f"{ledgers[0][0]}.log")
        return result
    finally:
        terminate_groups(procs)
        pg_server.stop()
        redis_server.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _intake_stop_line(path: Path) -> str:
    """The intake's own count of batches decided on what it remembered (its stop log line)."""
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if "decided on what it remembered" in ln]
    return lines[-1].split(": ", 1)[-1] if lines else "not logged"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=1, help="intake shards (default 1, as Settings)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-entry", type=int, default=200, help="requests per XADD entry")
    parser.add_argument("--chunk", type=int, default=2000, help="requests generated per send in the throughput phase")
    parser.add_argument("--online-users", type=int, default=200,
                        help="users 1..N subscribed to their event channels during the throughput phase (default 200, "
                             "a tenth of them)")
    parser.add_argument("--prebuild", type=int, default=1_500_000,
                        help="requests of the throughput phase generated before its clock starts (default 1,500,000)")
    parser.add_argument("--latency-rate", type=int, default=5000)
    parser.add_argument("--latency-s", type=float, default=10.0)
    parser.add_argument("--latency-listeners", type=int, default=0,
                        help="measure latency on the placements of users 1..N only, subscribing their event channels "
                             "(default 0: every user's, through a pattern subscription, so the ledger publishes "
                             "events for every user)")
    parser.add_argument("--warmup-s", type=float, default=2.0,
                        help="orders at the low rate before the latency phases, not measured (default 2 s)")
    parser.add_argument("--low-rate", type=int, default=500,
                        help="also measure latency at this lower offered rate first (0: skip)")
    parser.add_argument("--throughput-s", type=float, default=30.0)
    parser.add_argument("--max-backlog", type=int, default=20_000)
    parser.add_argument("--ledger-procs", type=int, choices=(1, 2), default=2,
                        help="2 (as `coffer up`): intake and settlement in two processes; 1: one `ledger run`")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and service logs)")
    args = parser.parse_args()
    from coffer.event_loop import install

    loop_name = install()  # as the coffer processes do (coffer/event_loop.py)
    result = run(args)
    print(json.dumps({**result, "event_loop": loop_name}))


if __name__ == "__main__":
    main()
