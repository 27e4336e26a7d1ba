"""A child process for the fault tests: an intake consumer that SIGKILLs itself right after
its first committed batch, before forwarding it (between commit and forward).

Run: python -m tests.ledger.crash_proc DB_URL REDIS_URL SHARD
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from redis.asyncio import Redis

from ledger.intake import IntakeConsumer


async def main(db_url: str, redis_url: str, shard: int) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    redis = Redis.from_url(redis_url)
    consumer = IntakeConsumer(pool, redis, shard=shard)
    await consumer.start()
    print("crash_proc: ready", flush=True)

    async def die(forwards: Mapping[str, Sequence[Any]], settled: Any, new_orders: Any) -> None:
        if any(forwards.values()):
            os.kill(os.getpid(), signal.SIGKILL)

    consumer._forward_new = die  # type: ignore[method-assign]
    while True:
        await consumer.step(block_ms=200)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
