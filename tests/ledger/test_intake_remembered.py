"""The intake deciding batches on what it remembers (ledger/intake_cache.py), against a real
PostgreSQL and Redis: a batch after the first needs no read statement and writes what the read
would have; every remembered fact that can be out of date is caught before anything is written
(a balance raised meanwhile, a reversal, a client order id taken elsewhere, an order it never
saw)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from redis.asyncio import Redis

from ledger.deposits import credit_deposit, reverse_deposit
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import (
    BATCH_FIELD,
    CancelRequest,
    PlaceOrderRequest,
    Reply,
    Request,
    decode_reply,
    encode_requests,
    intake_stream,
    reply_channel,
)
from matcher import keys
from matcher.protocol import CancelOrder, decode_commands
from tests.ledger.flow import add_assets, add_market

CH = reply_channel("remembered")
_users = itertools.count(401)
_keys = itertools.count(1)


class _Rig:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, pubsub: Any, market: str) -> None:
        self.pool, self.redis, self.pubsub, self.market = pool, redis, pubsub, market

    async def user(self, **funds: int) -> int:
        user = next(_users)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO users (id) VALUES ($1)", user)
            for asset, amount in funds.items():
                await self.deposit(conn, user, asset, amount)
        return user

    async def deposit(self, conn: asyncpg.Connection, user: int, asset: str, amount: int) -> str:
        key = f"{self.market}-d{next(_keys)}"
        await credit_deposit(conn, deposit_key=key, user_id=user, asset=asset, amount=amount, txid=key,
                             output_index=0)
        return key

    def place(self, rid: str, user: int, side: str, price: str, qty: str, coid: str | None = None) -> PlaceOrderRequest:
        return PlaceOrderRequest(rid, CH, user, self.market, side, "limit", price, qty, None, 1,  # type: ignore[arg-type]
                                 client_order_id=coid)

    async def batch(self, consumer: IntakeConsumer, requests: list[Request]) -> dict[str, Reply]:
        await self.redis.xadd(intake_stream(consumer.shard), {BATCH_FIELD: encode_requests(requests)})
        assert await consumer.step(block_ms=0) == 1
        await consumer.flush_events()
        out: dict[str, Reply] = {}
        async with asyncio.timeout(10):
            while len(out) < len(requests):
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if msg is not None:
                    reply = decode_reply(msg["data"])
                    out[reply.rid] = reply
        return out

    async def balance(self, user: int, asset: str) -> tuple[int, int]:
        row = await self.pool.fetchrow("SELECT available, frozen FROM balances WHERE user_id=$1 AND asset=$2",
                                       user, asset)
        return (0, 0) if row is None else (int(row["available"]), int(row["frozen"]))


@pytest_asyncio.fixture
async def rig(db_url: str, redis_url: str) -> AsyncIterator[_Rig]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(CH)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await add_assets(conn)
            market = await add_market(conn, min_notional=5_000)
        yield _Rig(pool, redis, pubsub, market)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
        await pool.close()


async def _started(rig: _Rig, shard: int) -> IntakeConsumer:
    consumer = IntakeConsumer(rig.pool, rig.redis, shard=shard)
    await consumer.start()
    return consumer


@pytest.mark.asyncio
async def test_a_later_batch_is_decided_without_a_read_and_writes_what_a_read_would(rig: _Rig) -> None:
    u = await rig.user(USDT=1_000_000)
    intake = await _started(rig, 10)
    first = await rig.batch(intake, [rig.place("a", u, "buy", "10", "0.01", coid="a")])  # 100,000 frozen
    assert first["a"].ok and intake.remembered == 0  # nothing remembered yet: read
    second = await rig.batch(intake, [
        rig.place("b", u, "buy", "10", "0.02", coid="b"),  # 200,000
        CancelRequest("cancel-a", CH, u, rig.market, 2, client_order_id="a"),
        rig.place("again-a", u, "buy", "12", "0.05", coid="a"),  # the same client order id: the original
        CancelRequest("cancel-b", CH, u, rig.market, 2, client_order_id="b"),  # placed in this very batch
        rig.place("too-much", u, "buy", "10", "1"),  # 10,000,000: more than remembered, so checked on a read
    ])
    assert (intake.remembered, intake.doubted) == (1, 1)  # decided on memory, doubted, decided on a read
    assert second["b"].ok and second["b"].state == "pending"
    assert second["again-a"].duplicate and second["again-a"].order_id == first["a"].order_id
    assert second["cancel-a"].ok and second["cancel-a"].order_id == first["a"].order_id
    assert second["cancel-b"].ok and second["cancel-b"].order_id == second["b"].order_id
    assert not second["too-much"].ok and "insufficient available USDT" in second["too-much"].reason

    third = await rig.batch(intake, [rig.place("c", u, "buy", "10", "0.03", coid="c")])  # 300,000
    assert third["c"].ok and (intake.remembered, intake.doubted) == (2, 1)  # on memory, nothing in doubt
    assert await rig.balance(u, "USDT") == (400_000, 600_000)
    rows = await rig.pool.fetch("SELECT id, client_order_id, iid, state FROM orders WHERE user_id = $1 ORDER BY iid", u)
    assert [(r["client_order_id"], r["state"]) for r in rows] == [("a", "pending"), ("b", "pending"),
                                                                  ("c", "pending")]
    assert [r["id"] for r in rows] == [first["a"].order_id, second["b"].order_id, third["c"].order_id]
    # read or remembered, the shard's order ids come from one block: they increase with the intake ids
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert await rig.pool.fetchval("SELECT last_iid FROM intake_offsets WHERE shard = 10") == rows[-1]["iid"]
    raw: Any = await rig.redis.xrange(keys.match_in(rig.market))
    cmds = [c for _id, f in raw for c in decode_commands(f[b"b"]) if c.shard == 10]
    assert [c.iid for c in cmds] == list(range(cmds[0].iid, cmds[0].iid + 5))  # 3 places, 2 cancels, in order
    assert [type(c).__name__ for c in cmds] == ["PlaceOrder", "PlaceOrder", "CancelOrder", "CancelOrder",
                                                "PlaceOrder"]
    assert isinstance(cmds[2], CancelOrder) and cmds[2].oid == first["a"].order_id
    # the journal explains the balances (one intake row per batch that changed them)
    total = await rig.pool.fetchval("SELECT sum(d_available) FROM balance_journal WHERE user_id = $1", u)
    assert total == 400_000


@pytest.mark.asyncio
async def test_a_balance_raised_meanwhile_is_seen_when_the_remembered_one_is_short(rig: _Rig) -> None:
    u = await rig.user(USDT=150_000)
    intake = await _started(rig, 11)
    assert (await rig.batch(intake, [rig.place("a", u, "buy", "10", "0.01")]))["a"].ok  # 50,000 left
    async with rig.pool.acquire() as conn, conn.transaction():
        await rig.deposit(conn, u, "USDT", 250_000)  # settlement or a deposit raise it: 300,000
    replies = await rig.batch(intake, [rig.place("b", u, "buy", "10", "0.03")])  # needs 300,000
    assert replies["b"].ok and intake.doubted == 1
    assert await rig.balance(u, "USDT") == (0, 400_000)


@pytest.mark.asyncio
async def test_a_reversal_since_the_balances_were_read_stops_a_user_it_left_negative(rig: _Rig) -> None:
    """A user with a negative balance may not place orders (in any asset). The intake remembers
    the user's BTC as it was before the reversal; the reversal's counter refuses the write that
    would have relied on it, and the fresh read sees the negative balance."""
    u = await rig.user(USDT=1_000_000)
    async with rig.pool.acquire() as conn, conn.transaction():
        btc_key = await rig.deposit(conn, u, "BTC", 1_000_000)
    intake = await _started(rig, 12)
    first = await rig.batch(intake, [rig.place("sell", u, "sell", "10", "0.005")])  # freezes 500,000 sat
    assert first["sell"].ok
    async with rig.pool.acquire() as conn, conn.transaction():
        assert await reverse_deposit(conn, deposit_key=btc_key, reason="reorg")
    assert await rig.balance(u, "BTC") == (-500_000, 500_000)
    replies = await rig.batch(intake, [rig.place("buy", u, "buy", "10", "0.01")])
    assert not replies["buy"].ok and "negative" in replies["buy"].reason
    assert (intake.remembered, intake.doubted) == (1, 1)
    assert await rig.balance(u, "USDT") == (1_000_000, 0)  # nothing frozen


@pytest.mark.asyncio
async def test_a_client_order_id_taken_where_the_intake_did_not_see_it_is_a_duplicate(rig: _Rig) -> None:
    """An order placed before this consumer started (here: through another shard's consumer) is
    not remembered; the unique key refuses the remembered decision and the read finds it."""
    u = await rig.user(USDT=1_000_000)
    intake, other = await _started(rig, 13), await _started(rig, 14)
    assert (await rig.batch(intake, [rig.place("a", u, "buy", "10", "0.01", coid="a")]))["a"].ok
    elsewhere = await rig.batch(other, [rig.place("x", u, "buy", "10", "0.01", coid="x")])
    replies = await rig.batch(intake, [rig.place("x-again", u, "buy", "11", "0.02", coid="x"),
                                       rig.place("y", u, "buy", "10", "0.01", coid="y")])
    assert (intake.remembered, intake.doubted) == (1, 1)
    assert replies["x-again"].duplicate and replies["x-again"].order_id == elsewhere["x"].order_id
    assert replies["y"].ok and not replies["y"].duplicate
    assert await rig.pool.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", u) == 3
    assert await rig.balance(u, "USDT") == (700_000, 300_000)


@pytest.mark.asyncio
async def test_a_cancel_of_an_order_the_intake_never_saw_is_looked_up_not_read(rig: _Rig) -> None:
    """After a restart the intake remembers no order: the orders a batch's cancels name are looked
    up (a small statement), the batch is still decided without its read, and a cancel of an order
    that does not exist (or is another user's) is refused as unknown."""
    u, other = await rig.user(USDT=1_000_000), await rig.user(USDT=1_000_000)
    before = await _started(rig, 15)
    placed = await rig.batch(before, [rig.place("a", u, "buy", "10", "0.01", coid="a"),
                                      rig.place("o", other, "buy", "10", "0.01", coid="o")])
    intake = await _started(rig, 15)  # a restart: remembers nothing
    assert (await rig.batch(intake, [rig.place("b", u, "buy", "10", "0.01")]))["b"].ok  # read: learns the user
    replies = await rig.batch(intake, [
        CancelRequest("by-id", CH, u, rig.market, 3, order_id=placed["a"].order_id),
        CancelRequest("by-coid", CH, u, rig.market, 3, client_order_id="a"),
        CancelRequest("nope", CH, u, rig.market, 3, order_id=10**12),
        CancelRequest("nope-coid", CH, u, rig.market, 3, client_order_id="never"),
        CancelRequest("not-mine", CH, u, rig.market, 3, order_id=placed["o"].order_id),
    ])
    assert (intake.remembered, intake.looked_up, intake.doubted) == (1, 1, 0)
    assert replies["by-id"].ok and replies["by-id"].order_id == placed["a"].order_id
    assert replies["by-coid"].ok and replies["by-coid"].order_id == placed["a"].order_id
    for rid in ("nope", "nope-coid", "not-mine"):
        assert not replies[rid].ok and "unknown order" in replies[rid].reason, rid
    cancels = await rig.pool.fetch("SELECT order_id FROM cancel_requests WHERE shard = 15 ORDER BY iid")
    assert [r["order_id"] for r in cancels] == [placed["a"].order_id] * 2


@pytest.mark.asyncio
async def test_the_service_consumer_starts_with_its_shard_users_remembered(rig: _Rig) -> None:
    """Users map to shards by user_id % shards: the consumer knows its users' balances from the
    start, so even its first batch needs no read (a user of another shard still does)."""
    mine = 1016  # 1016 % 20 == 16
    async with rig.pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO users (id) VALUES ($1), ($2)", mine, 1017)
        await rig.deposit(conn, mine, "USDT", 1_000_000)
        await rig.deposit(conn, 1017, "USDT", 1_000_000)
    intake = IntakeConsumer(rig.pool, rig.redis, shard=16, shards=20)
    await intake.start()
    first = await rig.batch(intake, [rig.place("a", mine, "buy", "10", "0.01")])
    assert first["a"].ok and (intake.remembered, intake.doubted) == (1, 0)
    other = await rig.batch(intake, [rig.place("b", 1017, "buy", "10", "0.01")])
    assert other["b"].ok and intake.remembered == 1
    assert await rig.balance(mine, "USDT") == (900_000, 100_000)
