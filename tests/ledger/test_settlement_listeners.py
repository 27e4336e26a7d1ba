"""Settlement builds and publishes user events only for users with a subscriber (ledger/online.py):
a subscribed user gets every event, an unsubscribed one costs nothing, a pattern subscriber
(`PSUBSCRIBE user:events:*`) makes settlement publish for everyone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

import ledger.settlement
from ledger.intake import publish_many
from ledger.intake_protocol import (
    CancelRequest,
    PlaceOrderRequest,
    Request,
    decode_user_events,
    user_events_channel,
)
from tests.ledger.flow import Pipeline, traders_pool

BUYER, SELLER = 11, 12


def _orders(m: str) -> list[Request]:
    """A resting sell, a buy filled at once by half of it, a buy taking the rest and resting its remainder."""
    return [
        PlaceOrderRequest("s", "", SELLER, m, "sell", "limit", "100", "0.010", None, 1),
        PlaceOrderRequest("b1", "", BUYER, m, "buy", "limit", "101", "0.005", None, 2),
        PlaceOrderRequest("b2", "", BUYER, m, "buy", "limit", "100", "0.008", None, 3),
    ]


async def _confirmed(pubsub: PubSub, n: int) -> None:
    for _ in range(n):
        assert await pubsub.get_message(timeout=5.0) is not None


async def _received(pubsub: PubSub) -> list[tuple[str, dict[str, Any]]]:
    """Every message delivered so far: (channel, event), the channel's events in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    while (msg := await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)) is not None:
        channel = msg["channel"].decode()
        out += [(channel, ev) for ev in decode_user_events(msg["data"])["events"]]
    return out


Received = list[tuple[str, dict[str, Any]]]


async def _run(db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch, subscribe: list[str],
               psubscribe: list[str], *, late_cancel: bool = False) -> tuple[Received, list[str]]:
    """Trade on a fresh market with `subscribe` / `psubscribe` listening; returns what the listener
    received (the intake consumer publishes balance events of its freezes too) and the channels
    settlement published to."""
    pool, m = await traders_pool(db_url, BUYER, SELLER)
    redis = Redis.from_url(redis_url)
    listener = Redis.from_url(redis_url).pubsub()
    published: list[str] = []

    async def recording(script: Any, messages: list[tuple[str, bytes]]) -> None:
        published.extend(channel for channel, _data in messages)
        await publish_many(script, messages)

    monkeypatch.setattr(ledger.settlement, "publish_many", recording)
    try:
        if subscribe:
            await listener.subscribe(*subscribe)
        if psubscribe:
            await listener.psubscribe(*psubscribe)
        await _confirmed(listener, len(subscribe) + len(psubscribe))
        flow = Pipeline(pool, redis, [m], shards=1)
        await flow.start()
        orders = _orders(m)
        if late_cancel:
            # b1's cancel passes the intake while b1 is still pending there (the engine has not
            # run yet) and reaches the engine after b1 filled: the engine rejects it
            await flow.send(0, orders[:2])
            for intake in flow.intakes:
                while await intake.step(block_ms=0):
                    pass
                await intake.flush_events()
            b1 = await pool.fetchval("SELECT id FROM orders WHERE user_id = $1 AND market = $2", BUYER, m)
            orders = [CancelRequest("c", "", BUYER, m, 4, order_id=b1), orders[2]]
        await flow.send(0, orders)
        await flow.drain()
        await asyncio.sleep(0.1)
        return await _received(listener), published
    finally:
        await listener.aclose()
        await redis.aclose()
        await pool.close()


def _kinds(events: list[tuple[str, dict[str, Any]]], channel: str) -> list[tuple[str, str]]:
    return [(ev["type"], str(ev.get("state") or ev.get("liquidity") or ev.get("asset"))) for ch, ev in events
            if ch == channel and ev["type"] != "balance"]


BUYER_EVENTS = [("fill", "taker"), ("order", "filled"), ("fill", "taker"), ("order", "open")]
SELLER_EVENTS = [("order", "open"), ("fill", "maker"), ("fill", "maker"), ("order", "filled")]


@pytest.mark.asyncio
async def test_a_subscribed_user_gets_every_event_an_unsubscribed_one_none(
        db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    got, published = await _run(db_url, redis_url, monkeypatch, [user_events_channel(BUYER)], [])
    assert set(published) == {user_events_channel(BUYER)}  # nothing built or sent for the seller
    assert _kinds(got, user_events_channel(BUYER)) == BUYER_EVENTS
    balances = {ev["asset"] for ch, ev in got if ch == user_events_channel(BUYER) and ev["type"] == "balance"}
    assert balances == {"BTC", "USDT"}  # BTC: settlement's (the intake's freeze moved USDT only)


@pytest.mark.asyncio
async def test_nobody_subscribed_publishes_nothing(db_url: str, redis_url: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _got, published = await _run(db_url, redis_url, monkeypatch, ["unrelated"], [])
    assert published == []


@pytest.mark.asyncio
async def test_a_pattern_subscriber_gets_every_users_events(db_url: str, redis_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    got, published = await _run(db_url, redis_url, monkeypatch, [], ["user:events:*"])
    assert set(published) == {user_events_channel(BUYER), user_events_channel(SELLER)}
    assert _kinds(got, user_events_channel(BUYER)) == BUYER_EVENTS
    assert _kinds(got, user_events_channel(SELLER)) == SELLER_EVENTS


@pytest.mark.asyncio
async def test_a_cancel_the_engine_rejects_is_an_event_of_its_own(db_url: str, redis_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    got, _published = await _run(db_url, redis_url, monkeypatch, [user_events_channel(BUYER)], [], late_cancel=True)
    events = [ev for ch, ev in got if ch == user_events_channel(BUYER) and ev["type"] != "balance"]
    assert [e["type"] for e in events] == ["fill", "order", "cancel_rejected", "fill", "order"]
    rejected = events[2]
    assert rejected["order_id"] == events[1]["order_id"] and events[1]["state"] == "filled"
    assert set(rejected) == {"type", "market", "order_id", "reason", "ts_ms"} and rejected["ts_ms"] == 4
    assert rejected["reason"]
    fill = events[0]
    assert list(fill) == ["type", "market", "order_id", "side", "liquidity", "seq", "price_ticks", "qty_lots",
                          "base_amount", "quote_amount", "fee", "fee_asset", "ts_ms"]
    assert (fill["side"], fill["liquidity"], fill["fee_asset"]) == ("buy", "taker", "BTC")
