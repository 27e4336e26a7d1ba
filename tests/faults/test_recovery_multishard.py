"""Redis (appendfsync everysec) loses engine output that settlement already applied, with three
intake shards: after Redis, the consumers and the runner restart, the engine must regenerate
exactly the settled seqs (ledger/recovery.py re-feeds the commands behind them in their original
cross-shard order), the ledger's balances must equal a replay of the engine's output, the audit
must be clean and no trade may be settled twice.

Also a pure check of `CommandLog.segment` against the engine itself on random flows (every STP
mode, cancels, market buys by funds), with settlement batches cut at random points, even inside
a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path
from typing import Any, Literal

import asyncpg
import msgpack
import pytest
from redis.asyncio import Redis

from coffer.localservices import PostgresServer, RedisServer
from ledger.arithmetic import OrderHold, release_deltas, settle_trade
from ledger.audit import run_audit
from ledger.deposits import credit_deposit
from ledger.events import decode_event_rows
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import CancelAllRequest, PlaceOrderRequest, Request, intake_stream, shard_for_user
from ledger.recovery import CommandLog
from ledger.repo import load_markets
from ledger.settlement import SettlementConsumer
from matcher import keys
from matcher.engine import Engine
from matcher.protocol import CancelOrder
from matcher.runner import MarketRunner, RunnerConfig
from tests.harness import new_database
from tests.ledger.flow import Pipeline, add_market
from tests.matcher.flows import random_flow
from tests.matcher.streams import assert_sequenced, read_out

SHARDS = 3
USERS = list(range(9301, 9313))  # four users per shard
DEPOSIT = 10**9
STPS: tuple[Literal["none", "cancel_taker", "cancel_maker", "cancel_both"], ...] = (
    "none", "none", "cancel_taker", "cancel_maker", "cancel_both")


# ---- the segmentation, against the engine ---------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_command_log_finds_each_commands_first_seq(seed: int) -> None:
    rng = random.Random(seed)
    engine = Engine()
    events: list[dict[str, Any]] = []
    truth: list[tuple[int, bool, int]] = []
    for cmd in random_flow(rng, 3000, users=3, spread=3):
        rows = engine.apply_wire(cmd)
        assert rows, "every command yields at least one event"
        truth.append((rows[0]["seq"], isinstance(cmd, CancelOrder), cmd.oid))
        events.extend(rows)
    log = CommandLog("X")
    state: dict[int, str] = {}
    found: dict[int, tuple[bool, int | None]] = {}
    placeholders = 0
    i = 0
    while i < len(events):
        batch = events[i:i + rng.randint(1, 40)]  # cuts anywhere, inside commands too
        typed = decode_event_rows(msgpack.packb(batch))  # as settlement reads them
        for seq, is_cancel, oid in log.segment(typed, lambda oid: state.get(oid, "pending")):
            # as the table sees it: a new row is inserted once (a plain INSERT), a placeholder
            # (oid NULL) is completed by a later batch's update
            if seq in log.completed:
                assert found[seq][1] is None, "only a placeholder is updated"
            else:
                assert seq not in found, f"seq {seq} inserted twice"
            placeholders += oid is None
            found[seq] = (is_cancel, oid)
        for e in batch:  # what settlement's states become
            if e["e"] == "open":
                state[e["oid"]] = "open"
            elif e["e"] == "done":
                state[e["oid"]] = e["reason"]
        i += len(batch)
    assert sorted((s, c, o) for s, (c, o) in found.items()) == truth
    assert placeholders > 0, "the flow cut some STP-begun command across batches"


# ---- the crash ------------------------------------------------------------------------------


async def _seed(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,1,1,2) ON CONFLICT DO NOTHING")
        await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1,2) ON CONFLICT DO NOTHING")
        m = await add_market(conn, min_notional=1)
        for u in USERS:
            await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", u)
            for k, a in enumerate(("BTC", "USDT")):
                await credit_deposit(conn, deposit_key=f"{m}{u}{a}", user_id=u, asset=a, amount=DEPOSIT, txid="f",
                                     output_index=k)
    return m


def _requests(m: str, rng: random.Random, start: int, n: int) -> list[tuple[int, Request]]:
    out: list[tuple[int, Request]] = []
    for i in range(start, start + n):
        u = rng.choice(USERS)
        roll = rng.random()
        req: Request
        side: Literal["buy", "sell"] = rng.choice(["buy", "sell"])
        if roll < 0.75:
            req = PlaceOrderRequest(f"r{i}", "", u, m, side, "limit", str(rng.randint(9, 12)),
                                    f"0.00{rng.randint(1, 9)}", None, i, stp=rng.choice(STPS))
        elif roll < 0.85:
            req = PlaceOrderRequest(f"r{i}", "", u, m, "buy", "market", None, None, "0.05", i, stp=rng.choice(STPS))
        elif roll < 0.95:
            req = PlaceOrderRequest(f"r{i}", "", u, m, "sell", "market", None, "0.004", None, i, stp=rng.choice(STPS))
        else:
            req = CancelAllRequest(f"r{i}", "", u, i, market=m)
        out.append((shard_for_user(u, SHARDS), req))
    return out


class _Stack:
    """Three intake consumers, the settlement consumer and the real runner, as tasks."""

    def __init__(self, pool: asyncpg.Pool, url: str, m: str) -> None:
        self.redis = Redis.from_url(url)
        self.runner_redis = Redis.from_url(url)
        self.stop = asyncio.Event()
        self.intakes = [IntakeConsumer(pool, self.redis, shard=k, batch_size=50, block_ms=10) for k in range(SHARDS)]
        self.settlement = SettlementConsumer(pool, self.redis, market=m, batch_size=5, block_ms=10)
        config = RunnerConfig(markets=(m,), redis_url=url, snapshot_interval_s=0.3, lease_ms=1000, block_ms=10,
                              batch=20)
        runner = MarketRunner(self.runner_redis, m, config, self.stop)
        self.tasks = [asyncio.create_task(c.run(self.stop)) for c in self.intakes]
        self.tasks += [asyncio.create_task(self.settlement.run(self.stop)), asyncio.create_task(runner.run())]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.redis.aclose()
        await self.runner_redis.aclose()


async def _send(redis: Redis, m: str, items: list[tuple[int, Request]], pause_s: float) -> None:
    flow = Pipeline(None, redis, [m], shards=SHARDS)  # type: ignore[arg-type]  # only `send` is used
    for i in range(0, len(items), 4):
        by_shard: dict[int, list[Request]] = {}
        for shard, req in items[i:i + 4]:
            by_shard.setdefault(shard, []).append(req)
        for shard, reqs in by_shard.items():
            await flow.send(shard, reqs)
        await asyncio.sleep(pause_s)


async def _quiet(pool: asyncpg.Pool, redis: Redis, m: str, timeout_s: float = 30.0) -> int:
    """Until every intake entry is committed, nothing is pending and settlement is at the engine's
    checkpoint; returns the settled seq."""
    state: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await asyncio.sleep(0.05)
                with contextlib.suppress(Exception):
                    pending = await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1 AND state='pending'",
                                                  m)
                    settled = await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m)
                    ck = int(await redis.hget(keys.checkpoint(m), "seq") or 0)  # type: ignore[misc]
                    ends: Any = [await redis.xrevrange(intake_stream(k), count=1) for k in range(SHARDS)]
                    stored = {r["shard"]: r["stream_id"] for r in await pool.fetch("SELECT * FROM intake_offsets")}
                    caught_up = all(not e or stored.get(k) == e[0][0].decode() for k, e in enumerate(ends))
                    state = (pending, settled, ck, caught_up)
                    if pending == 0 and caught_up and settled == ck and settled > 0:
                        return int(settled)
    except TimeoutError:
        raise AssertionError(f"did not settle: pending, settled, checkpoint seq, intake caught up = {state}") from None


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def _newest_incr_aof(server: RedisServer) -> Path:
    return max((server.directory / "appendonlydir").glob("*.incr.aof"), key=lambda p: p.stat().st_mtime)


async def _replay_balances(pool: asyncpg.Pool, m: str, rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[int]]:
    """Deposits, every order's freeze, then the engine's events through the pure arithmetic."""
    async with pool.acquire() as conn:
        market = (await load_markets(conn))[m]
        orders = {r["id"]: r for r in await conn.fetch("SELECT * FROM orders WHERE market=$1", m)}
    bal = {(u, a): [DEPOSIT, 0] for u in USERS for a in ("BTC", "USDT")}
    hold: dict[int, int] = {}
    for o in orders.values():
        b = bal[(o["user_id"], o["frozen_asset"])]
        b[0] -= int(o["frozen_total"])
        b[1] += int(o["frozen_total"])
        hold[o["id"]] = int(o["frozen_total"])

    def apply(deltas: Any) -> None:
        for d in deltas:
            b = bal[(d.user_id, d.asset)]
            b[0] += d.d_available
            b[1] += d.d_frozen

    def holding(oid: int) -> OrderHold:
        o = orders[oid]
        return OrderHold(oid, o["user_id"], o["side"], o["type"], o["price_ticks"], hold[oid])

    for e in rows:
        if e["e"] == "trade":
            buy, sell = (e["taker"], e["maker"]) if e["taker_side"] == "buy" else (e["maker"], e["taker"])
            eff = settle_trade(market, buy=holding(buy), sell=holding(sell), price_ticks=e["price"], qty_lots=e["qty"],
                               taker_side=e["taker_side"])
            apply(eff.deltas)
            hold[buy] -= eff.buy_consumed
            hold[sell] -= eff.sell_consumed
        elif e["e"] == "done":
            o = orders[e["oid"]]
            apply(release_deltas(o["user_id"], o["frozen_asset"], hold[e["oid"]]))
            hold[e["oid"]] = 0
    return bal


@pytest.fixture
def own_db(pg_server: PostgresServer) -> str:
    """A fresh database per test: the balance replay below starts from zero."""
    return new_database(pg_server, "recovery_multishard")


@pytest.mark.asyncio
@pytest.mark.parametrize("consumers_stay_up", [False, True], ids=["consumers-restarted", "consumers-stay-up"])
async def test_redis_aof_loss_with_three_intake_shards_converges(fresh_redis: RedisServer, own_db: str,
                                                                 caplog: pytest.LogCaptureFixture,
                                                                 consumers_stay_up: bool) -> None:
    """With `consumers_stay_up`, the consumers and the runner keep running through the Redis
    kill, AOF cut and restart: they see their connections drop and recover by themselves (the
    case where no error reaches a consumer is covered by the guarded-forward test below)."""
    caplog.set_level(logging.WARNING, logger="ledger.recovery")
    rng = random.Random(7)
    pool = await asyncpg.create_pool(own_db, min_size=4, max_size=10)
    url = fresh_redis.url
    try:
        m = await _seed(pool)
        stack = _Stack(pool, url, m)
        try:
            await _send(stack.redis, m, _requests(m, rng, 0, 400), 0.005)
            await _quiet(pool, stack.redis, m)
            await asyncio.sleep(1.2)  # let everysec sync what is there: the cut keeps all of it
            aof = _newest_incr_aof(fresh_redis)
            kept = aof.stat().st_size
            ck_at_cut = int(await stack.redis.hget(keys.checkpoint(m), "seq"))  # type: ignore[misc]
            # the second that will be lost: a burst from all three shards, settled before the crash
            await _send(stack.redis, m, _requests(m, rng, 400, 300), 0.002)
            settled_before = await _quiet(pool, stack.redis, m)
            assert _newest_incr_aof(fresh_redis) == aof, "an AOF rewrite happened mid-test"
            before = {row["seq"]: row for row in await read_out(stack.redis, m)}
        except BaseException:
            await stack.close()
            raise
        if not consumers_stay_up:
            await stack.close()
        assert settled_before > ck_at_cut + 50
        lost_shards = await pool.fetch("SELECT DISTINCT shard FROM orders WHERE market=$1 AND id IN "
                                       "(SELECT oid FROM settled_commands WHERE market=$1 AND first_seq > $2)",
                                       m, ck_at_cut)
        assert len(lost_shards) == SHARDS, "the lost commands interleave all three shards"

        fresh_redis.kill()
        # kill -9 alone keeps what Redis wrote to the OS; an OS crash with appendfsync everysec loses the
        # unsynced tail: cut the AOF back to the size it had before the burst
        _truncate(aof, kept)
        fresh_redis.start()
        if not consumers_stay_up:
            probe = Redis.from_url(url)
            try:
                assert int(await probe.hget(keys.checkpoint(m), "seq") or 0) == ck_at_cut  # type: ignore[misc]
            finally:
                await probe.aclose()
            stack = _Stack(pool, url, m)
        client = Redis.from_url(url)  # the test's own connection to the restarted Redis
        try:
            await _send(client, m, _requests(m, rng, 700, 150), 0.005)
            settled = await _quiet(pool, client, m)
            rows = await read_out(client, m)
        finally:
            await client.aclose()
            await stack.close()
        assert "re-fed the" in caplog.text

        # the engine's output is gap-free and regenerates every settled seq exactly
        assert_sequenced(rows)
        assert rows[-1]["seq"] == settled > settled_before
        diverged = [s for s, row in before.items() if rows[s - 1] != row]
        assert not diverged, f"{len(diverged)} settled seqs came back different, first {diverged[:5]}"

        async with pool.acquire() as conn:
            # no double trade: one trade row per trade event, equal to it
            trades = await conn.fetch("SELECT seq, buy_order, sell_order, price_ticks, qty_lots FROM trades "
                                      "WHERE market=$1 ORDER BY seq", m)
            events = [(e["seq"], *((e["taker"], e["maker"]) if e["taker_side"] == "buy" else (e["maker"], e["taker"])),
                       e["price"], e["qty"]) for e in rows if e["e"] == "trade"]
            assert [tuple(t) for t in trades] == events
            filled: dict[int, int] = {}
            for _seq, b, s, _p, q in events:
                filled[b] = filled.get(b, 0) + q
                filled[s] = filled.get(s, 0) + q
            for o in await conn.fetch("SELECT id, filled_lots, state FROM orders WHERE market=$1", m):
                assert o["filled_lots"] == filled.get(o["id"], 0)
                assert o["state"] != "pending"
            balances = {(r["user_id"], r["asset"]): [int(r["available"]), int(r["frozen"])]
                        for r in await conn.fetch("SELECT * FROM balances WHERE user_id = ANY($1::bigint[])", USERS)}
            assert await run_audit(conn) == []
        assert balances == await _replay_balances(pool, m, rows)
    finally:
        await pool.close()


@pytest.mark.asyncio
async def test_guarded_forward_refuses_new_commands_while_the_engine_is_behind_settlement(
        fresh_redis: RedisServer, own_db: str) -> None:
    """The forward of a NEW batch checks, in the same script as its XADD, that the engine's
    checkpoint is not behind settlement (the settled seqs the batch read from PostgreSQL): a
    consumer that never saw a connection error (redis-py reconnected to a restarted Redis under
    it) cannot put commands in front of the re-feed."""
    from ledger.intake_protocol import BATCH_FIELD, encode_requests
    from ledger.recovery import RedisLossError

    pool = await asyncpg.create_pool(own_db, min_size=1, max_size=4)
    redis = Redis.from_url(fresh_redis.url)
    try:
        m = await _seed(pool)
        async with pool.acquire() as conn:
            await conn.execute("INSERT INTO settlement_offsets (market, last_seq) VALUES ($1, 40) "
                               "ON CONFLICT (market) DO UPDATE SET last_seq = 40", m)
        consumer = IntakeConsumer(pool, redis, shard=0)
        await consumer.start()  # nothing to re-feed: no settled command is recorded
        user = next(u for u in USERS if shard_for_user(u, 1) == 0)

        async def place(i: int) -> None:
            req = PlaceOrderRequest(f"g{i}", "", user, m, "buy", "limit", "10", "0.001", None, i)
            await redis.xadd(intake_stream(0), {BATCH_FIELD: encode_requests([req])})

        await redis.hset(keys.checkpoint(m), "seq", 25)  # type: ignore[misc]  # Redis lost seqs 26..40
        await place(1)
        with pytest.raises(RedisLossError, match="checkpoint seq 25 is behind settled seq 40"):
            await consumer.step(block_ms=0)
        assert await redis.xlen(keys.match_in(m)) == 0

        await redis.hset(keys.checkpoint(m), "seq", 40)  # type: ignore[misc]  # the re-feed was applied
        await place(2)
        assert await consumer.step(block_ms=0) == 1
        assert await redis.xlen(keys.match_in(m)) == 1
    finally:
        await redis.aclose()
        await pool.close()
