"""The stream runner: `match:in{M}` -> engine -> `match:out{M}` + checkpoint, exactly once.

One asyncio task per market. A task first takes the market's lease (`match:lease{M}`, SET NX
PX with a fencing token from INCR `match:fence{M}`, done atomically in a script); a standby
keeps trying and takes over when the leader's lease expires. The leader then recovers: it
loads `match:snap{M}` (engine snapshot + the input id and watermarks it matches), replays
`match:in{M}` after the snapshot silently up to the checkpoint's input id, and checks that it
reaches exactly the checkpoint's `seq` and watermarks.

Its loop: XREAD a batch of input entries; drop every command whose intake id is not above
its shard's watermark (re-sent batches); apply the rest; then one atomic script (the Redis
Cluster-safe equivalent of WATCH + MULTI/EXEC, all keys under the `{M}` tag) checks that the
lease still holds our token, that the checkpoint's `seq` is the one our state started from
and that the last input entry we consumed still exists, and only then XADDs the events and
HSETs the checkpoint (and renews the lease). Any refusal or Redis error throws the in-memory
state away and goes back to lease + recovery, so a fenced-off leader, a Redis that restarted
from an AOF missing its last second, or an ambiguous reply can never produce a gap or a
duplicate `seq`. Every `snapshot_interval_s` the leader writes a snapshot (same fencing; from a
forked child unless `snapshot_in_child` is off, so matching does not stall while the book is
encoded), keeps the one it replaces as the fallback, and trims `match:in{M}` before that previous
snapshot's input id (unless `trim_input` is off).
SIGTERM/SIGINT finish the current batch, release the lease and exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec

from coffer import gc_policy
from matcher import keys
from matcher._aio import raise_if_cancelling, redis_client, serve_until_signalled, sleep_or_stop
from matcher.engine import Engine
from matcher.errors import LeaseLostError, RecoveryError, SnapshotError
from matcher.protocol import BATCH_FIELD, ProtocolError, WireCommand, WireEvent, decode_wire_commands

log = logging.getLogger("matcher.runner")
_encode = msgspec.msgpack.Encoder().encode  # wire Structs: the bytes of the events' field maps

# KEYS: lease, fence. ARGV: lease_ms, our previous token ("" if none).
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return cur
end
if cur then return false end
local token = tostring(redis.call('INCR', KEYS[2]))
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""

# KEYS: lease, out, ckpt, in. ARGV: token, lease_ms, prev_seq, prev_in_id, in_id, seq, n, payload*n, wm pairs.
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = redis.call('HGET', KEYS[3], 'seq') or '0'
local cur_in = redis.call('HGET', KEYS[3], 'in_id') or '0-0'
if cur ~= ARGV[3] or cur_in ~= ARGV[4] then return -1 end
if ARGV[5] ~= '0-0' and #redis.call('XRANGE', KEYS[4], ARGV[5], ARGV[5]) == 0 then return -2 end
local n = tonumber(ARGV[7])
for i = 1, n do redis.call('XADD', KEYS[2], '*', 'b', ARGV[7 + i]) end
local h = {'in_id', ARGV[5], 'seq', ARGV[6], 'fence', ARGV[1]}
for i = 8 + n, #ARGV do h[#h + 1] = ARGV[i] end
redis.call('HSET', KEYS[3], unpack(h))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease. ARGV: token, lease_ms.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease, snap, ckpt, in, snap_prev. ARGV: token, engine bytes, in_id, wm (msgpack), seq, trim (1/0).
# A snapshot may be older than the checkpoint (a forked writer finishes while the leader goes on;
# recovery replays from its input id), never newer (-1: Redis lost the output it describes), and
# it only ever replaces an older one (2: nothing written). The snapshot it replaces becomes the
# previous one (the fallback when the newest is unusable), and with trim = 1 the entries of
# match:in before the PREVIOUS snapshot's input id, which no restart replays any more, are
# trimmed in the same call: the stream holds about two snapshot intervals.
_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('HGET', KEYS[3], 'seq') or '0') < tonumber(ARGV[5]) then return -1 end
local newest = redis.call('HGET', KEYS[2], 'seq')
if newest and tonumber(newest) >= tonumber(ARGV[5]) then return 2 end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('RENAME', KEYS[2], KEYS[5]) end
redis.call('HSET', KEYS[2], 'engine', ARGV[2], 'in_id', ARGV[3], 'wm', ARGV[4], 'seq', ARGV[5])
local keep = redis.call('HGET', KEYS[5], 'in_id')
if ARGV[6] == '1' and keep and keep ~= '0-0' then redis.call('XTRIM', KEYS[4], 'MINID', keep) end
return 1
"""

# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_SKIP_ENTRY_LOG_LIMIT = 20
_PROGRESS_LOG_S = 30.0


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    """How one runner process behaves. Times in seconds or milliseconds as named."""

    markets: tuple[str, ...]
    redis_url: str
    snapshot_interval_s: float = 10.0
    trim_input: bool = True  # trim match:in before the previous snapshot (False: keep every command)
    # Write the periodic snapshots from a forked child (the book is copied on write by the OS), so
    # the leader goes on matching: encoding a book of 150k orders takes about 0.1 s, a stall of
    # every market of the process. False: in the leader, between two batches.
    snapshot_in_child: bool = True
    lease_ms: int = 3000
    batch: int = 100
    block_ms: int = 100
    out_chunk: int = 5000
    max_events_per_commit: int = 50_000
    retry_delay_s: float = 0.2


class MarketRunner:
    """The engine of one market, driven by its Redis streams."""

    def __init__(self, redis: Any, market: str, config: RunnerConfig, stop: asyncio.Event) -> None:
        self.r = redis
        self.market = market
        self.config = config
        self.stop = stop
        self.k_in = keys.match_in(market)
        self.k_out = keys.match_out(market)
        self.k_ckpt = keys.checkpoint(market)
        self.k_snap = keys.snapshot(market)
        self.k_snap_prev = keys.snapshot_prev(market)
        self.k_lease = keys.lease(market)
        self.k_fence = keys.fence(market)
        self._acquire = redis.register_script(_ACQUIRE)
        self._commit = redis.register_script(_COMMIT)
        self._renew = redis.register_script(_RENEW)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._release = redis.register_script(_RELEASE)
        self.token = ""
        self.engine = Engine()
        self.in_id = "0-0"
        self.wm: dict[int, int] = {}
        self.commits = 0
        self.commands = 0
        self._skipped_logged = 0
        self._snap_child: int | None = None  # the pid of a forked snapshot writer still running

    # ---- lease ------------------------------------------------------------------------

    async def acquire(self) -> bool:
        """Take (or keep) the lease; False when another runner holds it."""
        got = await self._acquire(keys=[self.k_lease, self.k_fence], args=[self.config.lease_ms, self.token])
        if got is None:
            return False
        self.token = got.decode() if isinstance(got, bytes) else str(got)
        return True

    async def release(self) -> None:
        if self.token:
            await self._release(keys=[self.k_lease], args=[self.token])

    # ---- recovery ---------------------------------------------------------------------

    def _apply_entry(self, fields: dict[bytes, bytes], rows: list[WireEvent] | None) -> None:
        raw = fields.get(BATCH_FIELD)
        try:
            cmds: list[WireCommand] = decode_wire_commands(raw) if raw is not None else []
        except ProtocolError as exc:
            # A poison entry is skipped the same way live and in recovery, so state stays deterministic.
            if self._skipped_logged < _SKIP_ENTRY_LOG_LIMIT:
                self._skipped_logged += 1
                log.error("%s: skipping undecodable match:in entry: %s", self.market, exc)
            return
        wm = self.wm
        engine = self.engine
        applied = 0
        for cmd in cmds:
            shard = cmd.shard
            iid = cmd.iid
            if iid <= wm.get(shard, 0):
                continue
            wm[shard] = iid
            if rows is None:
                out: list[Any] = []
                engine.execute(cmd, out)
                engine.seq += len(out)
            else:
                engine.apply_into(cmd, rows)
            applied += 1
        self.commands += applied

    async def recover(self) -> None:
        """Rebuild the state the checkpoint describes: snapshot + silent replay up to it."""
        ckpt = await self.r.hgetall(self.k_ckpt)
        ck_in = ckpt.get(b"in_id", b"0-0").decode()
        ck_seq = int(ckpt.get(b"seq", b"0"))
        ck_wm = {int(k[3:]): int(v) for k, v in ckpt.items() if k.startswith(b"wm:")}
        self.engine, self.in_id, self.wm = Engine(), "0-0", {}
        for key, name in ((self.k_snap, "snapshot"), (self.k_snap_prev, "previous snapshot")):
            snap = await self.r.hgetall(key)
            if not snap:
                continue
            try:
                snap_in = snap[b"in_id"].decode()
                if not _id_le(snap_in, ck_in):
                    log.warning("%s: %s is ahead of the checkpoint; not using it", self.market, name)
                    continue
                engine = Engine.restore(snap[b"engine"])
                wm = {int(k): int(v) for k, v in msgpack.unpackb(snap[b"wm"], strict_map_key=False).items()}
            except (SnapshotError, ValueError, TypeError, AttributeError, KeyError) as exc:
                log.error("%s: unusable %s (%s: %s)", self.market, name, type(exc).__name__, exc)
                continue
            self.engine, self.in_id, self.wm = engine, snap_in, wm
            break
        else:
            log.warning("%s: no usable snapshot; replaying match:in from its first entry (it holds every command "
                        "only if it was never trimmed: `--keep-input`)", self.market)
        replayed = 0
        while self.in_id != ck_in:
            entries = await self.r.xrange(self.k_in, min="(" + self.in_id, max=ck_in, count=self.config.batch)
            if not entries:
                raise RecoveryError(f"{self.market}: match:in ends before the checkpoint's input id {ck_in}")
            for entry_id, fields in entries:
                self._apply_entry(fields, None)
                self.in_id = entry_id.decode()
                replayed += 1
        if self.engine.seq != ck_seq or self.wm != ck_wm:
            raise RecoveryError(
                f"{self.market}: replay reached seq {self.engine.seq}, checkpoint says {ck_seq}: state diverged "
                "(without a usable snapshot, match:in must hold every command since the start)"
            )
        log.info("%s: recovered at seq %d, input %s (%d entries replayed)", self.market, ck_seq, ck_in, replayed)

    # ---- the loop ---------------------------------------------------------------------

    async def _commit_batch(self, prev_seq: int, prev_in: str, rows: list[WireEvent]) -> None:
        chunk = self.config.out_chunk
        payloads = [_encode(rows[i:i + chunk]) for i in range(0, len(rows), chunk)]
        wm_args: list[Any] = []
        for shard, iid in self.wm.items():
            wm_args += [keys.watermark_field(shard), iid]
        res = await self._commit(
            keys=[self.k_lease, self.k_out, self.k_ckpt, self.k_in],
            args=[self.token, self.config.lease_ms, prev_seq, prev_in, self.in_id, self.engine.seq, len(payloads),
                  *payloads, *wm_args],
        )
        if res == 0:
            raise LeaseLostError(f"{self.market}: lease lost (token {self.token} fenced off)")
        if res != 1:
            raise RecoveryError(f"{self.market}: checkpoint in Redis is not the one our state started from ({res})")
        self.commits += 1

    def _snapshot_args(self) -> tuple[list[str], list[Any]]:
        return ([self.k_lease, self.k_snap, self.k_ckpt, self.k_in, self.k_snap_prev],
                [self.token, self.engine.snapshot(), self.in_id, msgpack.packb(self.wm), self.engine.seq,
                 1 if self.config.trim_input else 0])

    async def _write_snapshot(self) -> None:
        await self._reap_snapshot(wait=True)  # a forked writer's older snapshot lands first
        snap_keys, args = self._snapshot_args()
        res = await self._snapshot(keys=snap_keys, args=args)
        if res not in (1, 2):
            raise LeaseLostError(f"{self.market}: snapshot refused ({res})")

    def _fork_snapshot(self) -> None:
        """Write a snapshot of the state as it is now from a forked child, at most one at a time
        (while the last one still runs, this interval's is skipped). The child encodes the book
        from its copy-on-write view, runs the same fenced script over a connection of its own and
        exits without running any of the parent's cleanup."""
        if self._snap_child is not None:
            return
        pid = os.fork()
        if pid == 0:  # the child: no event loop, no inherited connection is used
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # a signal to the child must not wake the parent's loop
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                import redis as sync_redis

                client = sync_redis.Redis.from_url(self.config.redis_url, socket_timeout=30)
                snap_keys, args = self._snapshot_args()
                res = client.register_script(_SNAPSHOT)(keys=snap_keys, args=args)
                code = {1: 0, 2: 0, 0: 3, -1: 4}.get(int(res), 1)
            finally:
                os._exit(code)
        self._snap_child = pid

    async def _reap_snapshot(self, *, wait: bool = False) -> None:
        """Collect the forked writer once it exited (`wait`: until it has); log a refusal."""
        pid = self._snap_child
        if pid is None:
            return
        deadline = time.monotonic() + 60
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG returns at once
            if done or not wait or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        if not done:
            if wait:  # stuck: do not let it land after what the caller writes next
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)  # noqa: ASYNC222 - a killed child is reaped at once
                self._snap_child = None
            return
        self._snap_child = None
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            reason = {3: "the lease is no longer ours", 4: "it is ahead of the checkpoint"}.get(code, f"exit {code}")
            log.warning("%s: the forked snapshot writer did not write (%s)", self.market, reason)

    async def _read(self) -> Any:
        return await self.r.xread({self.k_in: self.in_id}, count=self.config.batch, block=self.config.block_ms)

    async def lead(self) -> None:
        """Process input while we hold the lease; returns on stop, raises when fenced off."""
        await self.recover()
        last_snap = time.monotonic()
        last_renew = time.monotonic()
        renew_every = self.config.lease_ms / 3000
        last_log = time.monotonic()
        read_ahead: asyncio.Task[Any] | None = None
        try:
            while not self.stop.is_set():
                raise_if_cancelling()
                if read_ahead is not None:
                    reply = await read_ahead
                    read_ahead = None
                else:
                    reply = await self._read()
                now = time.monotonic()
                if not reply:
                    if now - last_renew >= renew_every:
                        if not await self._renew(keys=[self.k_lease], args=[self.token, self.config.lease_ms]):
                            raise LeaseLostError(f"{self.market}: lease lost while idle")
                        last_renew = now
                    continue
                entries = reply[0][1]
                prev_seq, prev_in = self.engine.seq, self.in_id
                rows: list[WireEvent] = []
                for n, (entry_id, fields) in enumerate(entries, start=1):
                    self._apply_entry(fields, rows)
                    self.in_id = entry_id.decode()
                    if len(rows) >= self.config.max_events_per_commit and n < len(entries):
                        # big input entries: commit in parts so one script call stays bounded
                        await self._commit_batch(prev_seq, prev_in, rows)
                        prev_seq, prev_in, rows = self.engine.seq, self.in_id, []
                # Read the next batch while this one commits (the read does not depend on the commit;
                # if the commit is refused, the read-ahead is thrown away with the rest of the state).
                read_ahead = asyncio.create_task(self._read())
                await self._commit_batch(prev_seq, prev_in, rows)
                gc_policy.between_batches()
                last_renew = now
                if self._snap_child is not None:
                    await self._reap_snapshot()
                if now - last_snap >= self.config.snapshot_interval_s:
                    if self.config.snapshot_in_child:
                        self._fork_snapshot()
                    else:
                        await self._write_snapshot()
                    last_snap = now
                if now - last_log >= _PROGRESS_LOG_S:
                    log.info("%s: seq %d, input %s, %d commands applied since start", self.market,
                             self.engine.seq, self.in_id, self.commands)
                    last_log = now
        finally:
            if read_ahead is not None:
                read_ahead.cancel()
                with contextlib.suppress(BaseException):
                    await read_ahead
        if self.commits:
            await self._write_snapshot()  # a clean stop leaves a fresh snapshot: fast restart

    async def run(self) -> None:
        """Standby until we get the lease, then lead; after any fault start over from Redis."""
        import redis.exceptions as rexc

        waiting_logged = False
        while not self.stop.is_set():
            raise_if_cancelling()
            try:
                if not await self.acquire():
                    if not waiting_logged:
                        log.info("%s: standby, another runner holds the lease", self.market)
                        waiting_logged = True
                    await sleep_or_stop(self.stop, self.config.lease_ms / 4000)
                    continue
                waiting_logged = False
                log.info("%s: leader with fencing token %s", self.market, self.token)
                await self.lead()
            except (LeaseLostError, RecoveryError) as exc:
                log.warning("%s", exc)
                if isinstance(exc, LeaseLostError):
                    self.token = ""
                await sleep_or_stop(self.stop, self.config.retry_delay_s)
            except (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError) as exc:
                raise_if_cancelling()
                log.warning("%s: Redis unavailable (%s); will recover from Redis", self.market, exc)
                await sleep_or_stop(self.stop, self.config.retry_delay_s)
        with contextlib.suppress(rexc.ConnectionError, rexc.TimeoutError, OSError):
            await self.release()


def _id_le(a: str, b: str) -> bool:
    """Stream id order: `a <= b`."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    return (int(ams), int(aseq or 0)) <= (int(bms), int(bseq or 0))



async def run_markets(config: RunnerConfig, stop: asyncio.Event) -> None:
    """Run every market of `config` until `stop` is set."""
    client = redis_client(config.redis_url, config.block_ms)
    try:
        async with asyncio.TaskGroup() as tg:
            for market in config.markets:
                tg.create_task(MarketRunner(client, market, config, stop).run())
    finally:
        await client.aclose()


def serve(config: RunnerConfig) -> int:
    """Entry point of `coffer matcher run`: runs until SIGTERM/SIGINT, then exits 0."""
    gc_policy.install()  # the runners collect between batches
    return serve_until_signalled(config.markets, lambda stop: run_markets(config, stop))
