"""ledger/online.py against a real Redis: which users have a subscriber on their event channel."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ledger.intake_protocol import user_events_channel
from ledger.online import OnlineUsers


async def _confirmed(pubsub: PubSub, n: int) -> None:
    """Wait for `n` (un)subscribe confirmations: Redis has then done those commands."""
    for _ in range(n):
        assert await pubsub.get_message(timeout=5.0) is not None


@pytest.mark.asyncio
async def test_only_users_with_a_channel_subscriber_listen(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    listener = Redis.from_url(redis_url).pubsub()
    try:
        assert await OnlineUsers(redis).among(set()) == set()
        assert await OnlineUsers(redis).among({1, 2, 3}) == set()
        await listener.subscribe(user_events_channel(2), "user:events:30", "something:else:3")
        await _confirmed(listener, 3)
        assert set(await OnlineUsers(redis).among({1, 2, 3})) == {2}
        await listener.unsubscribe(user_events_channel(2))
        await _confirmed(listener, 1)
        assert set(await OnlineUsers(redis).among([1, 2, 3])) == set()
    finally:
        await listener.aclose()
        await redis.aclose()


@pytest.mark.asyncio
async def test_a_pattern_subscription_makes_every_user_a_listener(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    monitor = Redis.from_url(redis_url).pubsub()
    try:
        await monitor.psubscribe("user:events:*")
        await _confirmed(monitor, 1)
        assert set(await OnlineUsers(redis).among({1, 2, 3})) == {1, 2, 3}
    finally:
        await monitor.aclose()
        await redis.aclose()


@pytest.mark.asyncio
async def test_an_unreachable_redis_counts_every_user_as_listening() -> None:
    # port 1 on localhost: nothing listens there, the connection is refused at once
    redis = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        assert set(await OnlineUsers(redis).among({4, 5})) == {4, 5}
    finally:
        await redis.aclose()
