"""The intake consumer: rejections with reasons (nothing frozen), duplicate client_order_id,
replies on the API's channel, re-send of the last committed batch, re-forward above the
engine watermark after a Redis loss."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.deposits import credit_deposit, reverse_deposit
from ledger.errors import OffsetMovedError
from ledger.intake import BEHIND_REQUESTS, IntakeConsumer
from ledger.intake_protocol import (
    BATCH_FIELD,
    CancelAllRequest,
    CancelRequest,
    PlaceOrderRequest,
    Reply,
    WithdrawRequest,
    decode_reply,
    decode_requests,
    encode_requests,
    intake_stream,
    reply_channel,
)
from matcher import keys
from matcher.protocol import CancelOrder, PlaceOrder, decode_commands
from tests.ledger.flow import BTC_REGTEST_ADDRESS, Pipeline, add_assets, add_market

CH = reply_channel("test")


async def _setup(db_url: str) -> tuple[asyncpg.Pool, str]:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    async with pool.acquire() as conn, conn.transaction():
        await add_assets(conn)
        symbol = await add_market(conn, min_notional=50_000)
        await conn.execute("INSERT INTO users (id) VALUES (1), (2) ON CONFLICT DO NOTHING")
        for k, (u, a, amt) in enumerate([(1, "USDT", 1_000_000), (2, "BTC", 1_000_000)]):
            await credit_deposit(conn, deposit_key=f"{symbol}{k}", user_id=u, asset=a, amount=amt, txid="t",
                                 output_index=k)
    return pool, symbol


async def _collect(pubsub: Any, n: int) -> list[Reply]:
    out: list[Reply] = []
    async with asyncio.timeout(10):
        while len(out) < n:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if msg is not None:
                out.append(decode_reply(msg["data"]))
    return out


async def _balance(pool: asyncpg.Pool, user: int, asset: str) -> tuple[int, int]:
    row = await pool.fetchrow("SELECT available, frozen FROM balances WHERE user_id=$1 AND asset=$2", user, asset)
    return (0, 0) if row is None else (row["available"], row["frozen"])


@pytest.mark.asyncio
async def test_rejections_duplicates_and_replies(db_url: str, redis_url: str) -> None:
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(CH)
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()

        def place(rid: str, user: int, side: str, price: str | None, qty: str | None, coid: str | None = None,
                  market: str = m, funds: str | None = None) -> PlaceOrderRequest:
            typ = "limit" if price is not None else "market"
            return PlaceOrderRequest(rid, CH, user, market, side, typ, price, qty, funds, 1,  # type: ignore[arg-type]
                                     client_order_id=coid)

        reqs: list[Any] = [
            place("unknown-market", 1, "buy", "10", "0.01", market="NOPE-X"),
            place("unknown-user", 99, "buy", "10", "0.01"),
            place("off-tick", 1, "buy", "10.5", "0.01"),
            place("off-lot", 1, "buy", "10", "0.0105"),
            place("min-notional", 1, "buy", "10", "0.004"),  # 10 * 4 * 1000 = 40000 < 50000
            place("insufficient", 1, "buy", "1000", "1"),  # needs 1e9 USDT units
            place("market-buy-qty", 1, "buy", None, "0.01"),
            place("ok", 1, "buy", "10", "0.02", coid="A"),  # freezes 10 * 20 * 1000 = 200000
            place("dup", 1, "buy", "11", "0.03", coid="A"),
            CancelRequest("cancel-unknown", CH, 1, m, 1, order_id=987654),
            WithdrawRequest("bad-address", CH, 2, "BTC", "0.001", "bc1notanaddress", 1),
            WithdrawRequest("too-small", CH, 2, "BTC", "0.0001", BTC_REGTEST_ADDRESS, 1),
        ]
        await flow.send(0, reqs)
        await flow.intakes[0].step(block_ms=0)
        await flow.intakes[0].flush_events()
        replies = {r.rid: r for r in await _collect(pubsub, len(reqs))}
        expect_reason = {
            "unknown-market": "unknown market", "unknown-user": "unknown user", "off-tick": "not a multiple of 1",
            "off-lot": "not a multiple of 0.001", "min-notional": "below the minimum notional",
            "insufficient": "insufficient available USDT", "market-buy-qty": "market buy needs positive funds",
            "cancel-unknown": "unknown order", "bad-address": "invalid address",
            "too-small": "below the minimum withdrawal",
        }
        for rid, words in expect_reason.items():
            assert not replies[rid].ok and replies[rid].state == "rejected", rid
            assert words in replies[rid].reason, (rid, replies[rid].reason)
        ok, dup = replies["ok"], replies["dup"]
        assert ok.ok and ok.state == "pending" and ok.order_id is not None
        assert dup.ok and dup.duplicate and dup.order_id == ok.order_id
        assert await _balance(pool, 1, "USDT") == (800_000, 200_000)
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE user_id = 1") == 1
        # forwarded exactly one PlaceOrder with shard/iid
        raw: Any = await redis.xrange(keys.match_in(m))
        cmds = [c for _id, f in raw for c in decode_commands(f[b"b"])]
        assert len(cmds) == 1 and isinstance(cmds[0], PlaceOrder) and cmds[0].iid == 1 and cmds[0].shard == 0
        # a duplicate arriving in a LATER batch also returns the original
        await flow.send(0, [place("dup2", 1, "buy", "12", "0.05", coid="A")])
        await flow.intakes[0].step(block_ms=0)
        await flow.intakes[0].flush_events()
        (dup2,) = await _collect(pubsub, 1)
        assert dup2.duplicate and dup2.order_id == ok.order_id
        # cancel-all forwards a cancel; after settlement the hold is released
        await flow.send(0, [CancelAllRequest("ca", CH, 1, 2, market=m)])
        await flow.drain()
        (ca,) = await _collect(pubsub, 1)
        assert ca.ok and ca.canceled == 1
        assert await _balance(pool, 1, "USDT") == (1_000_000, 0)
        # a reversal that leaves BTC negative blocks the user's orders and withdrawals
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE balances SET available = available - 999000 WHERE user_id=2 AND asset='BTC'")
            await conn.execute("INSERT INTO balance_journal (user_id, asset, d_available, d_frozen, kind, ref_id) "
                               "VALUES (2, 'BTC', -999000, 0, 'test_spend', 0)")
            await conn.execute("INSERT INTO users (id) VALUES (3) ON CONFLICT DO NOTHING")
            await credit_deposit(conn, deposit_key=f"{m}x", user_id=2, asset="USDT", amount=5_000_000, txid="t",
                                 output_index=9)
            await credit_deposit(conn, deposit_key=f"{m}y", user_id=2, asset="BTC", amount=10_000, txid="t",
                                 output_index=10)
            assert await reverse_deposit(conn, deposit_key=f"{m}1", reason="reorg")
        assert (await _balance(pool, 2, "BTC"))[0] < 0
        await flow.send(0, [place("neg", 2, "buy", "10", "0.01"),
                            WithdrawRequest("neg-wd", CH, 2, "USDT", "3", "0x" + "11" * 20, 3)])
        await flow.intakes[0].step(block_ms=0)
        await flow.intakes[0].flush_events()
        neg = {r.rid: r for r in await _collect(pubsub, 2)}
        assert all(not r.ok and "negative" in r.reason for r in neg.values()), neg
        assert await _balance(pool, 2, "USDT") == (5_000_000, 0)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_restart_resends_last_batch_and_reforwards_above_watermark(db_url: str, redis_url: str) -> None:
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    try:
        first = IntakeConsumer(pool, redis, shard=1)
        await first.start()
        reqs: list[Any] = [PlaceOrderRequest(f"q{i}", "", 1, m, "buy", "limit", "10", "0.01", None, i)
                           for i in range(3)]
        await redis.xadd(intake_stream(1), {BATCH_FIELD: encode_requests(reqs)})
        # commit the batch but "crash" before forwarding: run process() ourselves
        resp: Any = await redis.xread({intake_stream(1): "0-0"})
        entries = resp[0][1]
        requests: list[Any] = [r for _e, f in entries for r in decode_requests(f[b"b"])]
        async with pool.acquire() as conn, conn.transaction():
            await first.process(conn, requests, entries[-1][0].decode())
        assert await redis.exists(keys.match_in(m)) == 0
        second = IntakeConsumer(pool, redis, shard=1)
        await second.start()  # re-sends the last committed batch
        raw: Any = await redis.xrange(keys.match_in(m))
        iids = [c.iid for _id, f in raw for c in decode_commands(f[b"b"])]
        assert sorted(set(iids)) == [1, 2, 3]
        assert second.last_id == entries[-1][0].decode()
        assert await second.step(block_ms=0) == 0  # the committed entries are not processed again
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE market=$1", m) == 3
        # Redis loses match:in; the engine's checkpoint says it accepted iid 1 of shard 1
        await redis.delete(keys.match_in(m))
        await redis.hset(keys.checkpoint(m), keys.watermark_field(1), 1)  # type: ignore[misc]
        oid3 = await pool.fetchval("SELECT id FROM orders WHERE market=$1 AND iid=3", m)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO cancel_requests VALUES (1, 4, $1, $2, 1, 9)", m, oid3)
            await conn.execute("UPDATE intake_offsets SET last_iid = 4, batch_first_iid = 4 WHERE shard = 1")
        third = IntakeConsumer(pool, redis, shard=1)
        await third.start()
        raw = await redis.xrange(keys.match_in(m))
        cmds = [c for _id, f in raw for c in decode_commands(f[b"b"])]
        # last batch (the cancel, iid 4) + every live command above the watermark (2, 3, 4), in iid order
        above = [c for c in cmds if not (isinstance(c, CancelOrder) and c is cmds[0])]
        assert [c.iid for c in cmds][-3:] == [2, 3, 4]
        assert all(c.iid > 1 for c in above)
    finally:
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_settlement_applies_each_seq_once_even_when_repeated_in_one_read(db_url: str, redis_url: str) -> None:
    from ledger.settlement import SettlementConsumer
    from matcher.protocol import BATCH_FIELD as MATCH_FIELD
    from tests.ledger.pump import EnginePump

    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    try:
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()
        await flow.send(0, [PlaceOrderRequest("s", "", 2, m, "sell", "limit", "10", "0.005", None, 1),
                            PlaceOrderRequest("b", "", 1, m, "buy", "limit", "10", "0.005", None, 2)])
        await flow.intakes[0].step(block_ms=0)
        await flow.intakes[0].flush_events()
        pump = EnginePump(redis, m)
        await pump.drain()
        raw: Any = await redis.xrange(keys.match_out(m))
        # the engine re-writes the same output (its MULTI reply was lost), and again later
        for _ in range(2):
            for _id, fields in raw:
                await redis.xadd(keys.match_out(m), {MATCH_FIELD: fields[MATCH_FIELD]})
        settle = SettlementConsumer(pool, redis, market=m, publish=False)
        await settle.start()
        while await settle.step(block_ms=0):
            pass
        assert await pool.fetchval("SELECT count(*) FROM trades WHERE market=$1", m) == 1
        assert await pool.fetchval("SELECT last_seq FROM settlement_offsets WHERE market=$1", m) == pump.engine.seq
        async with pool.acquire() as conn:
            from ledger.audit import run_audit

            # (the 'assets' check is off in this module on purpose: the first test spends funds
            # outside the ledger's records to make a balance negative)
            assert [d for d in await run_audit(conn) if d.check != "assets"] == []
    finally:
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_withdrawal_hold_settle_release_are_idempotent(db_url: str, redis_url: str) -> None:
    from ledger.withdrawals import release_withdrawal, settle_withdrawal

    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(CH)
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()
        before = await _balance(pool, 2, "BTC")
        await flow.send(0, [WithdrawRequest(f"{m}-w1", CH, 2, "BTC", "0.001", BTC_REGTEST_ADDRESS, 1),
                            WithdrawRequest(f"{m}-w2", CH, 2, "BTC", "0.002", BTC_REGTEST_ADDRESS, 2),
                            WithdrawRequest(f"{m}-w1", CH, 2, "BTC", "0.001", BTC_REGTEST_ADDRESS, 3)])
        await flow.drain()
        r1, r2, r3 = await _collect(pubsub, 3)
        assert r1.ok and r1.state == "held" and r2.ok and r3.duplicate and r3.withdrawal_id == r1.withdrawal_id
        assert await _balance(pool, 2, "BTC") == (before[0] - 300_000, before[1] + 300_000)
        assert r1.withdrawal_id is not None and r2.withdrawal_id is not None
        async with pool.acquire() as conn, conn.transaction():
            assert await settle_withdrawal(conn, withdrawal_id=r1.withdrawal_id, txid="aa" * 32)
            assert not await settle_withdrawal(conn, withdrawal_id=r1.withdrawal_id, txid="aa" * 32)
            assert not await release_withdrawal(conn, withdrawal_id=r1.withdrawal_id, reason="late")
            assert await release_withdrawal(conn, withdrawal_id=r2.withdrawal_id, reason="policy")
            assert not await settle_withdrawal(conn, withdrawal_id=r2.withdrawal_id, txid="bb" * 32)
        assert await _balance(pool, 2, "BTC") == (before[0] - 100_000, before[1])
        async with pool.acquire() as conn:
            from ledger.audit import run_audit

            assert [d for d in await run_audit(conn) if d.check != "assets"] == []
            fee_row = await conn.fetchrow("SELECT amount, fee, state FROM withdrawals WHERE id = $1", r1.withdrawal_id)
            assert (fee_row["amount"], fee_row["fee"], fee_row["state"]) == (100_000, 10_000, "settled")
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
        await pool.close()


class _ReversalRacesIntake(IntakeConsumer):
    """An intake consumer during whose first batch a deposit reversal commits, after the batch has
    read the balances (unlocked) and before its final upsert: the race the guard is for."""

    reversal: tuple[asyncpg.Pool, str] | None = None
    attempts: list[bool]

    async def process(self, conn: asyncpg.Connection, requests: list[Any], last_id: str, *,
                      locked: bool = False, in_transaction: bool = False, remembered: bool = False) -> Any:
        self.attempts.append(locked)
        return await super().process(conn, requests, last_id, locked=locked, in_transaction=in_transaction,
                                     remembered=remembered)

    async def _write(self, conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if self.reversal is not None:
            pool, key = self.reversal
            self.reversal = None
            async with pool.acquire() as other, other.transaction():  # waits for nothing: no row is locked
                await asyncio.wait_for(reverse_deposit(other, deposit_key=key, reason="reorg"), 10)
        return await super()._write(conn, *args, **kwargs)


@pytest.mark.asyncio
async def test_a_reversal_racing_a_batch_makes_it_decide_again_on_locked_rows(db_url: str, redis_url: str) -> None:
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    try:
        async with pool.acquire() as conn, conn.transaction():  # a user of its own (the module shares a database)
            await conn.execute("INSERT INTO users (id) VALUES (71)")
            for key in ("base", "extra"):
                await credit_deposit(conn, deposit_key=f"{m}-{key}", user_id=71, asset="USDT", amount=1_000_000,
                                     txid="t", output_index=9 if key == "extra" else 8)
        assert await _balance(pool, 71, "USDT") == (2_000_000, 0)
        await pubsub.subscribe(CH)
        intake = _ReversalRacesIntake(pool, redis, shard=0)
        intake.attempts = []
        intake.reversal = (pool, f"{m}-extra")
        await intake.start()
        # freezes 10 * 150 lots * 1000 = 1,500,000: covered by what the batch read, not after the reversal
        req = PlaceOrderRequest("race", CH, 71, m, "buy", "limit", "10", "0.15", None, 1)
        await redis.xadd(intake_stream(0), {BATCH_FIELD: encode_requests([req])})
        await intake.step(block_ms=0)
        await intake.flush_events()
        (reply,) = await _collect(pubsub, 1)
        # unlocked first, refused (by the row's guard, or by the reversal counter), then decided again
        # on a fresh read (on locked rows after the row's guard)
        assert intake.attempts in ([False, True], [False, False])
        assert not reply.ok and "insufficient available USDT" in reply.reason
        assert await _balance(pool, 71, "USDT") == (1_000_000, 0)  # nothing frozen
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE user_id = 71") == 0
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_a_forward_still_in_flight_is_resent_with_the_next_batch_after_a_crash(db_url: str,
                                                                                      redis_url: str) -> None:
    """A consumer that is behind forwards a batch while it decides the next one. If it crashes after
    committing the next batch but before the earlier forward landed, the restart re-sends both, in
    intake-id order (a later id first would make the engine's watermark drop the earlier batch)."""
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    try:
        consumer = IntakeConsumer(pool, redis, shard=2, batch_size=1)  # every one-entry batch is "behind"
        await consumer.start()
        first_iid = int(await pool.fetchval("SELECT last_iid FROM intake_offsets WHERE shard = 2")) + 1
        hold = asyncio.Event()
        real_forward = consumer._forward_new

        calls: list[Any] = []

        async def stuck_forward(forwards: Any, settled: Any, new_orders: Any) -> None:  # the first one does not land
            calls.append(forwards)
            if len(calls) == 1:
                await hold.wait()
            await real_forward(forwards, settled, new_orders)

        consumer._forward_new = stuck_forward  # type: ignore[method-assign]
        for i in range(2):
            req = PlaceOrderRequest(f"f{i}", "", 1, m, "buy", "limit", "10", "0.01", None, i)
            await redis.xadd(intake_stream(2), {BATCH_FIELD: encode_requests([req])})
        assert await consumer.step(block_ms=0) == 1  # batch 1 committed, its forward in flight
        step2 = asyncio.create_task(consumer.step(block_ms=0))  # batch 2 commits, then waits for batch 1's forward
        async with asyncio.timeout(10):
            while await pool.fetchval("SELECT last_iid FROM intake_offsets WHERE shard = 2") < first_iid + 1:  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.01)
        assert await pool.fetchval("SELECT batch_first_iid FROM intake_offsets WHERE shard = 2") == first_iid
        step2.cancel()  # the crash: neither forward has landed
        with contextlib.suppress(asyncio.CancelledError):
            await step2
        assert await redis.exists(keys.match_in(m)) == 0

        restarted = IntakeConsumer(pool, redis, shard=2)
        await restarted.start()
        raw: Any = await redis.xrange(keys.match_in(m))
        iids = [c.iid for _id, f in raw for c in decode_commands(f[b"b"]) if c.shard == 2]
        assert iids[:2] == [first_iid, first_iid + 1]  # both batches, the earlier first
        if consumer._forwarding is not None:  # the crashed consumer's stuck forward goes with it
            consumer._forwarding.cancel()
    finally:
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_a_batch_of_many_requests_in_few_entries_counts_as_behind(db_url: str, redis_url: str) -> None:
    """Entries that carry many requests each (200 in bench.pipeline) never fill the XREAD's count of
    entries; a batch of BEHIND_REQUESTS requests still reads the next batch ahead and sends its
    forward beside it. A small batch forwards before its step returns. Either way the engine gets
    every accepted order, in intake-id order."""
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    try:
        consumer = IntakeConsumer(pool, redis, shard=1)  # batch_size: 5,000 entries
        await consumer.start()
        before = await pool.fetchval("SELECT last_iid FROM intake_offsets WHERE shard = 1")
        big = [PlaceOrderRequest(f"behind-{i}", "", 1, m, "buy", "limit", "10", "0.01", None, i)
               for i in range(BEHIND_REQUESTS)]
        await redis.xadd(intake_stream(1), {BATCH_FIELD: encode_requests(big)})
        assert await consumer.step(block_ms=0) == 1
        assert consumer._forwarding is not None  # behind: the forward runs beside the next batch
        small = PlaceOrderRequest("behind-s", "", 1, m, "buy", "limit", "10", "0.01", None, 0)
        await redis.xadd(intake_stream(1), {BATCH_FIELD: encode_requests([small])})
        assert await consumer.step(block_ms=0) == 1
        assert consumer._forwarding is None  # not behind: forwarded within the step
        accepted = await pool.fetch("SELECT id, iid FROM orders WHERE shard = 1 AND iid > $1 ORDER BY iid", before)
        assert len(accepted) >= 2
        ids = {r["id"] for r in accepted}
        raw: Any = await redis.xrange(keys.match_in(m))
        iids = [c.iid for _id, f in raw for c in decode_commands(f[b"b"]) if getattr(c, "oid", None) in ids]
        assert iids == [r["iid"] for r in accepted]
    finally:
        await redis.aclose()
        await pool.close()


class _OvertakenIntake(IntakeConsumer):
    """An intake consumer whose batch, between its read and its write, is committed by a second
    consumer of the same shard (a misconfiguration the offset fences)."""

    rival: IntakeConsumer | None = None

    async def _write(self, conn: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            assert await rival.step(block_ms=0) == 1
        return await super()._write(conn, *args, **kwargs)


@pytest.mark.asyncio
async def test_a_batch_whose_offset_moved_under_it_writes_nothing(db_url: str, redis_url: str) -> None:
    """The intake writes a small batch in one statement outside a transaction block, so no lock is
    held between its read and its write: the write moves the offset only from where the read saw it,
    and otherwise refuses as a whole. The batch is then committed once, by the rival. (With client
    order ids the rival's orders would refuse the statement first, by their unique key.)"""
    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    try:
        async with pool.acquire() as conn:  # a user of its own (the module shares a database)
            await conn.execute("INSERT INTO users (id) VALUES (73)")
            await credit_deposit(conn, deposit_key=f"{m}-73", user_id=73, asset="USDT", amount=1_000_000, txid="t",
                                 output_index=73)
        slow, rival = _OvertakenIntake(pool, redis, shard=3), IntakeConsumer(pool, redis, shard=3)
        await slow.start()
        await rival.start()
        slow.rival = rival
        reqs: list[Any] = [PlaceOrderRequest(f"o{i}", "", 73, m, "buy", "limit", "10", "0.01", None, i)
                           for i in range(2)]
        await redis.xadd(intake_stream(3), {BATCH_FIELD: encode_requests(reqs)})
        with pytest.raises(OffsetMovedError, match="moved the shard's offset"):
            await slow.step(block_ms=0)
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE user_id = 73") == 2
        assert await pool.fetchval("SELECT count(*) FROM balance_journal WHERE user_id = 73") == 2  # deposit, 1 batch
        assert await _balance(pool, 73, "USDT") == (800_000, 200_000)  # 2 x 10 x 10 lots x 1000
        await slow.start()  # recovery: the committed batch is not processed again
        assert await slow.step(block_ms=0) == 0
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE user_id = 73") == 2
        assert await _balance(pool, 73, "USDT") == (800_000, 200_000)  # 2 x 10 x 10 lots x 1000
    finally:
        await redis.aclose()
        await pool.close()


@pytest.mark.asyncio
async def test_balance_events_go_only_to_users_who_listen(db_url: str, redis_url: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake publishes a freeze's new balance on `user:events:<id>` only when that channel has
    a subscriber (ledger/online.py): user 74 listens and gets it, user 75 does not and costs nothing."""
    import ledger.intake
    from ledger.intake_protocol import decode_user_events, user_events_channel

    pool, m = await _setup(db_url)
    redis = Redis.from_url(redis_url)
    listener = Redis.from_url(redis_url).pubsub()
    published: list[str] = []
    real_publish = ledger.intake.publish_many

    async def recording(script: Any, messages: list[tuple[str, bytes]]) -> None:
        published.extend(channel for channel, _data in messages)
        await real_publish(script, messages)

    monkeypatch.setattr(ledger.intake, "publish_many", recording)
    try:
        async with pool.acquire() as conn:
            for user in (74, 75):
                await conn.execute("INSERT INTO users (id) VALUES ($1)", user)
                await credit_deposit(conn, deposit_key=f"{m}-{user}", user_id=user, asset="USDT", amount=1_000_000,
                                     txid="t", output_index=user)
        await listener.subscribe(user_events_channel(74))
        assert await listener.get_message(timeout=5.0) is not None  # subscribed
        intake = IntakeConsumer(pool, redis, shard=0)
        await intake.start()
        reqs: list[Any] = [PlaceOrderRequest(f"l{u}", "", u, m, "buy", "limit", "10", "0.01", None, 1)
                           for u in (74, 75)]
        await redis.xadd(intake_stream(0), {BATCH_FIELD: encode_requests(reqs)})
        assert await intake.step(block_ms=0) == 1
        await intake.flush_events()
        msg = await listener.get_message(ignore_subscribe_messages=True, timeout=5.0)
        assert msg is not None
        assert decode_user_events(msg["data"])["events"] == [
            {"type": "balance", "asset": "USDT", "available": 900_000, "frozen": 100_000}]
        assert [ch for ch in published if ch.startswith("user:events:")] == [user_events_channel(74)]
    finally:
        await listener.aclose()  # type: ignore[no-untyped-call]
        await redis.aclose()
        await pool.close()
