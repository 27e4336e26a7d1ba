"""The new-order feed (ledger/order_feed.py): settlement takes new orders from the intake's
entries instead of reading them back, and never takes an entry whose order it may have changed."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from ledger.intake_protocol import PlaceOrderRequest
from ledger.order_feed import FIELD, NewOrder, OrderFeed, decode_entry, encode_entry, feed_key
from tests.ledger.flow import traders_flow

BUYER, SELLER = 21, 22


def _entry(shard: int, *ids: int) -> bytes:
    return encode_entry(shard, [(i, 1, "buy", "limit", 100, "USDT", 5000) for i in ids])


def _ids(orders: list[NewOrder]) -> list[int]:
    return [o[0] for o in orders]


def test_an_entry_round_trips() -> None:
    orders: list[NewOrder] = [(7, 3, "sell", "market", None, "BTC", 100000), (8, 3, "buy", "limit", 12, "USDT", 9)]
    assert decode_entry(encode_entry(4, orders)) == (4, orders)


def test_orders_already_in_memory_are_not_taken() -> None:
    feed = OrderFeed("M")
    assert _ids(feed.accept(_entry(0, 1, 2, 3), known={2})) == [1, 3]


def test_an_order_read_from_the_database_is_never_taken_from_an_entry_again() -> None:
    feed = OrderFeed("M")
    feed.loaded([5, 9])
    # ids up to the highest read may belong to orders settlement already changed
    assert _ids(feed.accept(_entry(0, 4, 9, 10), known=set())) == [10]


def test_a_repeated_entry_of_a_shard_is_refused_even_after_its_orders_left_memory() -> None:
    feed = OrderFeed("M")
    assert _ids(feed.accept(_entry(0, 1, 2), known=set())) == [1, 2]
    # the orders finished and were dropped from memory; a copy of the entry comes again
    assert feed.accept(_entry(0, 1, 2), known=set()) == []
    assert _ids(feed.accept(_entry(0, 3), known=set())) == [3]


def test_shards_interleave_but_each_shards_ids_must_grow() -> None:
    feed = OrderFeed("M")
    assert _ids(feed.accept(_entry(1, 20, 21), known=set())) == [20, 21]
    assert _ids(feed.accept(_entry(0, 10, 11), known=set())) == [10, 11]  # another shard's lower ids
    assert feed.accept(_entry(1, 19), known=set()) == []


def test_starting_over_forgets_the_floors() -> None:
    feed = OrderFeed("M")
    feed.loaded([50])
    feed.start_at("5-0")
    assert feed.position == "5-0"
    assert _ids(feed.accept(_entry(0, 40), known=set())) == [40]


def _sell(m: str, rid: str, qty: str) -> PlaceOrderRequest:
    return PlaceOrderRequest(rid, "", SELLER, m, "sell", "limit", "100", qty, None, 1)


def _buy(m: str, rid: str, qty: str) -> PlaceOrderRequest:
    return PlaceOrderRequest(rid, "", BUYER, m, "buy", "limit", "100", qty, None, 2)


async def _order(pool: asyncpg.Pool, side: str, m: str) -> Any:
    return await pool.fetchrow("SELECT id, state, filled_lots, frozen_remaining FROM orders "
                               "WHERE market = $1 AND side = $2", m, side)


@pytest.mark.asyncio
async def test_settlement_running_before_the_orders_reads_none_of_them_back(db_url: str, redis_url: str) -> None:
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool = flow.pool
        await flow.send(0, [_sell(m, "s", "0.010"), _buy(m, "b1", "0.004"), _buy(m, "b2", "0.006")])
        await flow.drain()
        settle = flow.settlements[m]
        assert settle.orders_read == 0
        assert settle._feed.taken == 3
        assert await pool.fetchval("SELECT count(*) FROM orders WHERE market = $1 AND state = 'filled'", m) == 3
        assert await flow.audit() == []


@pytest.mark.asyncio
async def test_a_settlement_started_later_reads_the_older_orders_from_the_database(db_url: str,
                                                                                    redis_url: str) -> None:
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool, redis = flow.pool, flow.redis
        await flow.send(0, [_sell(m, "s", "0.010"), _buy(m, "b1", "0.004")])
        await flow.drain_to_engine()
        assert await redis.xlen(feed_key(m)) == 1
        settle = flow.settlements[m]
        await settle.start()  # a restart: the entry was written before it, so it is not used
        await flow.drain()
        assert settle._feed.taken == 0
        assert settle.orders_read == 2
        sell = await _order(pool, "sell", m)
        assert (sell["state"], sell["filled_lots"]) == ("open", 4)


@pytest.mark.asyncio
async def test_a_copy_of_an_entry_after_its_order_changed_is_not_used(db_url: str, redis_url: str) -> None:
    """The resting sell is half filled, then dropped from settlement's memory (as its cache limit
    does) and its original entry arrives again: settlement must read the sell from the database,
    not take the entry's untouched state (which would settle the next fill against a full freeze
    and an unfilled order)."""
    async with traders_flow(db_url, redis_url, BUYER, SELLER) as (flow, m):
        pool, redis = flow.pool, flow.redis
        await flow.send(0, [_sell(m, "s", "0.010"), _buy(m, "b1", "0.004")])
        await flow.drain()
        first: Any = await redis.xrange(feed_key(m), count=1)
        settle = flow.settlements[m]
        sell = await _order(pool, "sell", m)
        assert (sell["state"], sell["filled_lots"]) == ("open", 4)
        del settle._orders[sell["id"]]
        await redis.xadd(feed_key(m), {FIELD: first[0][1][FIELD]})  # the copy
        await flow.send(0, [_buy(m, "b2", "0.006")])
        await flow.drain()
        assert settle.orders_read == 1  # the sell, from the database
        sell = await _order(pool, "sell", m)
        assert (sell["state"], sell["filled_lots"], sell["frozen_remaining"]) == ("filled", 10, 0)
        assert await flow.audit() == []
