"""The benchmarks' raw pub/sub listener hears every message of its channels or pattern, whole,
in order, including messages split across socket reads."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from bench.pubsub_listener import Listener

Got = list[tuple[bytes, bytes]]


@contextlib.asynccontextmanager
async def _listening(redis_url: str) -> AsyncIterator[tuple[Listener, aioredis.Redis, Got]]:
    """A listener recording (channel, data), not started, and a client to publish with."""
    got: Got = []
    listener = Listener(redis_url, lambda ch, data: got.append((ch, data)))
    client = aioredis.from_url(redis_url)
    try:
        yield listener, client, got
    finally:
        await listener.close()
        await client.aclose()


async def _wait_for(got: Got, n: int) -> None:
    async with asyncio.timeout(10):
        while len(got) < n:  # noqa: ASYNC110 - polls a list the listener fills
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_channels_in_order_and_only_those(redis_url: str) -> None:
    async with _listening(redis_url) as (listener, client, got):
        await listener.start(channels=[f"user:events:{u}" for u in range(1, 2501)])  # more than one SUBSCRIBE
        assert await client.publish("user:events:2500", b"last-subscribed") == 1
        assert await client.publish("user:events:2501", b"nobody") == 0
        big = bytes(range(256)) * 2048  # 512 KiB: arrives over many socket reads
        for i in range(200):
            await client.publish(f"user:events:{i % 7 + 1}", b"m%d" % i)
        await client.publish("user:events:3", big)
        await _wait_for(got, 202)
        assert got[0] == (b"user:events:2500", b"last-subscribed")
        assert [d for _c, d in got[1:201]] == [b"m%d" % i for i in range(200)]
        assert [c for c, _d in got[1:8]] == [f"user:events:{i + 1}".encode() for i in range(7)]
        assert got[201] == (b"user:events:3", big)
        await asyncio.sleep(0.05)
        assert len(got) == 202  # nothing for the channel nobody subscribed


@pytest.mark.asyncio
async def test_pattern(redis_url: str) -> None:
    async with _listening(redis_url) as (listener, client, got):
        await listener.start(pattern="user:events:*")
        await client.publish("user:events:42", b"a")
        await client.publish("other:1", b"b")
        await client.publish("user:events:7", b"c")
        await _wait_for(got, 2)
        await asyncio.sleep(0.05)
        assert got == [(b"user:events:42", b"a"), (b"user:events:7", b"c")]
