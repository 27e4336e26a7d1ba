"""The packed script call (ledger/redis_packed.py) against a real Redis: a script Redis does not
have is loaded and called once, replies and errors come back as redis-py's would, and the
connection goes back to the pool usable."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ledger.intake import publish_many, publish_script
from ledger.redis_packed import evalsha


@pytest.mark.asyncio
async def test_a_packed_call_loads_a_missing_script_and_publishes_in_order(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    listener = Redis.from_url(redis_url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe("a", "b")
        script = publish_script(redis)
        await redis.script_flush()  # as after a Redis restart
        messages = [("a", b"1"), ("b", bytes(range(256)) * 40), ("a", b"3")]  # binary, and past redis-py's cutoff
        await publish_many(script, messages)
        got = []
        while len(got) < 3:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
            if msg is not None:
                got.append((msg["channel"].decode(), msg["data"]))
        assert got == messages
        assert await evalsha(script, ["a", b"x"]) == 1  # the script's own reply
        broken = redis.register_script("return redis.error_reply('refused here')")
        with pytest.raises(ResponseError, match="refused here"):
            await evalsha(broken, [])
        assert await redis.ping()  # the pooled connection still answers in order
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await listener.aclose()
        await redis.aclose()
