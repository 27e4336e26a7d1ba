"""The pub/sub hub: fan-out to several listeners, replies matched by request id, subscriptions
reference counted and dropped after lingering, a full listener marked overflowed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from api.hub import EventHub
from ledger.intake_protocol import Reply, decode_reply, encode_reply


async def _numsub(red: Any, channel: str) -> int:
    [(_, n)] = await red.pubsub_numsub(channel)
    return int(n)


@pytest.mark.asyncio
async def test_fan_out_replies_linger_and_overflow(redis_url: str) -> None:
    red = aioredis.from_url(redis_url)
    hub = EventHub(redis_url, "intake:reply:test", decode_reply)
    hub.linger_s = 0.3
    await hub.start()
    try:
        fut = hub.expect_reply("r1")
        async with hub.listening(["c"], maxsize=100) as a, hub.listening(["c"], maxsize=2) as b:
            assert await _numsub(red, "c") == 1
            await red.publish("intake:reply:test", encode_reply(Reply(rid="r1", ok=True, kind="place",
                                                                       state="pending", order_id=7)))
            assert (await asyncio.wait_for(fut, 5)).order_id == 7
            for i in range(5):
                await red.publish("c", f"m{i}".encode())
            got = [await a.get(5) for _ in range(5)]
            assert [g[1] if g else None for g in got] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
            assert b.overflowed and b.queue.qsize() == 2  # the small queue kept 2 and gave up
            assert not a.overflowed
        # both left: the subscription lingers, then goes
        assert await _numsub(red, "c") == 1
        for _ in range(50):
            await asyncio.sleep(0.1)
            if await _numsub(red, "c") == 0:
                break
        assert await _numsub(red, "c") == 0
        async with hub.listening(["c"]) as again:  # and comes back on demand
            for _ in range(50):
                if await _numsub(red, "c") == 1:
                    break
                await asyncio.sleep(0.05)
            await red.publish("c", b"back")
            assert (await again.get(5)) == ("c", b"back")
    finally:
        await hub.close()
        await red.aclose()
