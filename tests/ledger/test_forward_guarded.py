"""The intake's guarded forward (ledger/recovery.py) against a real Redis: one round trip when
Redis has the script, the script loaded and the calls sent again when it does not, and a market
whose engine checkpoint is behind what settlement applied refused."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from ledger.order_feed import feed_key
from ledger.recovery import RedisLossError, forward_guarded, guarded_forward_script
from matcher import keys


@pytest.mark.asyncio
async def test_the_forward_survives_a_redis_without_the_script_and_refuses_a_lost_market(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        script = guarded_forward_script(redis)
        await redis.script_flush()  # as after a Redis restart: the script is not there
        await forward_guarded(script, redis, {"A-B": 0, "C-D": 0}, {"A-B": [b"a1", b"a2"], "C-D": [b"c1"]},
                              {"A-B": b"feed-a"})
        entries: Any = await redis.xrange(keys.match_in("A-B"))
        assert [f[b"b"] for _id, f in entries] == [b"a1", b"a2"]
        assert await redis.xlen(keys.match_in("C-D")) == 1 and await redis.xlen(feed_key("A-B")) == 1
        assert (await redis.script_exists(script.sha)) == [True]  # loaded: the next forward is one round trip
        # Redis lost engine output of C-D that settlement applied (checkpoint 0 < settled 5)
        with pytest.raises(RedisLossError, match="behind settled seq 5"):
            await forward_guarded(script, redis, {"A-B": 0, "C-D": 5}, {"A-B": [b"a3"], "C-D": [b"c2"]})
        assert await redis.xlen(keys.match_in("A-B")) == 3 and await redis.xlen(keys.match_in("C-D")) == 1
    finally:
        await redis.aclose()
