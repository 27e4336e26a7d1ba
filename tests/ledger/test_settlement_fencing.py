"""Settlement writes a batch in one statement with no lock held since it read the offset: the
statement moves the offset only from the seq the batch was computed on, so a second consumer of
the same market that settled meanwhile makes the first one's batch refuse as a whole
(StaleBatchError), and every trade is settled once. A batch's statement is sent while the one
before it still runs; one that reaches PostgreSQL first is refused and sent again after it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from ledger.intake_protocol import PlaceOrderRequest, Request
from ledger.settlement import SettlementConsumer, StaleBatchError
from tests.ledger.flow import traders_flow

BUYER, SELLER = 21, 22


class _Overtaken(SettlementConsumer):
    """Lets a rival settle the same events between computing its batch and writing it."""

    rival: SettlementConsumer | None = None

    async def _write_once(self, p: Any) -> Any:
        if self.rival is not None:
            rival, self.rival = self.rival, None
            assert await rival.step(block_ms=0) > 0
            await rival.flush_events()
        return await super()._write_once(p)


@pytest.mark.asyncio
@pytest.mark.parametrize("with_trade", [True, False], ids=["trade", "open-only"])
async def test_a_batch_overtaken_by_a_second_consumer_writes_nothing(db_url: str, redis_url: str,
                                                                     with_trade: bool) -> None:
    """With a trade, the trade's unique key would refuse the batch too; without one (a resting
    order only) the offset's seq guard alone does."""
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool, redis = flow.pool, flow.redis
        reqs: list[Request] = [PlaceOrderRequest("s", "", SELLER, m, "sell", "limit", "100", "0.010", None, 1),
                               PlaceOrderRequest("b", "", BUYER, m, "buy", "limit", "101" if with_trade else "99",
                                                 "0.004", None, 2)]
        await flow.send(0, reqs)
        await flow.drain_to_engine()  # settlement is what the test drives

        journal_start = await pool.fetchval("SELECT coalesce(max(id), 0) FROM balance_journal")
        slow, rival = _Overtaken(pool, redis, market=m), SettlementConsumer(pool, redis, market=m)
        await slow.start()
        await rival.start()
        slow.rival = rival
        assert await slow.step(block_ms=0) > 0  # computed; its write runs in the background
        with pytest.raises(StaleBatchError, match="was overtaken"):
            await slow.step(block_ms=0)  # nothing new to read: waits for the write, which raises
        assert await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m) == int(with_trade)
        buy_state = await pool.fetchval("SELECT state FROM orders WHERE market = $1 AND user_id = $2", m, BUYER)
        assert buy_state == ("filled" if with_trade else "open")
        batches = await pool.fetchval("SELECT count(DISTINCT ref_id) FROM balance_journal WHERE id > $1",
                                      journal_start)
        assert batches == int(with_trade)  # the rival's batch only (a batch without a trade moves no balance)
        assert await pool.fetchval("SELECT count(*) FROM settled_commands WHERE market = $1", m) == 2
        await slow.start()  # recovery from the database: nothing left to settle
        assert await slow.step(block_ms=0) == 0
        assert await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m) == int(with_trade)
        assert await flow.audit() == []


class _FirstHeldBack(SettlementConsumer):
    """Holds its first batch's statement back until the second batch's statement was refused."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0
        self.release = asyncio.Event()
        self.second_refused = asyncio.Event()

    async def _write_once(self, p: Any) -> Any:
        self.calls += 1
        call = self.calls
        if call == 1:
            await self.release.wait()
        try:
            return await super()._write_once(p)
        except StaleBatchError:
            if call == 2:
                self.second_refused.set()
            raise


@pytest.mark.asyncio
async def test_a_batch_statement_that_overtakes_the_one_before_is_sent_again_after_it(db_url: str,
                                                                                      redis_url: str) -> None:
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool, redis = flow.pool, flow.redis
        consumer = _FirstHeldBack(pool, redis, market=m, batch_size=1)  # one match:out entry a batch
        await consumer.start()
        for req in (PlaceOrderRequest("s", "", SELLER, m, "sell", "limit", "100", "0.010", None, 1),
                    PlaceOrderRequest("b", "", BUYER, m, "buy", "limit", "101", "0.004", None, 2)):
            await flow.send(0, [req])
            await flow.drain_to_engine()  # one match:out entry per request
        assert await consumer.step(block_ms=0) == 1  # the resting sell: its statement held back
        assert await consumer.step(block_ms=0) == 1  # the trade: sent at once, reaches PostgreSQL first
        async with asyncio.timeout(10):
            await consumer.second_refused.wait()  # the offset row did not hold its seq yet
        consumer.release.set()
        await consumer.flush_events()
        assert consumer.rewrites == 1
        assert consumer.calls == 3
        assert await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m) == 1
        sell = await pool.fetchrow("SELECT state, filled_lots FROM orders WHERE market = $1 AND side = 'sell'", m)
        assert (sell["state"], sell["filled_lots"]) == ("open", 4)
        assert await flow.audit() == []


@pytest.mark.asyncio
async def test_a_batch_write_waits_for_the_offset_rows_lock_before_it_writes_anything(db_url: str,
                                                                                    redis_url: str) -> None:
    """The write locks the offset row first (ledger_settle_batch): while another transaction holds
    it (the batch before, still committing), nothing of the batch is written, and afterwards all
    of it is, on what that transaction left."""
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool = flow.pool
        holder = await asyncpg.connect(db_url)
        try:
            await flow.send(0, [PlaceOrderRequest("s", "", SELLER, m, "sell", "limit", "100", "0.010", None, 1),
                                PlaceOrderRequest("b", "", BUYER, m, "buy", "limit", "101", "0.004", None, 2)])
            await flow.drain_to_engine()
            tx = holder.transaction()
            await tx.start()
            await holder.execute("SELECT 1 FROM settlement_offsets WHERE market = $1 FOR UPDATE", m)
            settle = flow.settlements[m]
            assert await settle.step(block_ms=0) > 0  # computed and sent; its write waits for the lock
            await asyncio.sleep(0.3)
            assert await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m) == 0
            assert await pool.fetchval("SELECT state FROM orders WHERE market = $1 AND side = 'sell'", m) == "pending"
            await tx.commit()
            await settle.flush_events()
            assert await pool.fetchval("SELECT count(*) FROM trades WHERE market = $1", m) == 1
            assert await pool.fetchval("SELECT state FROM orders WHERE market = $1 AND side = 'sell'", m) == "open"
            assert await flow.audit() == []
        finally:
            await holder.close()
