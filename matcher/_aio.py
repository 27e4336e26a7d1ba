"""Async plumbing shared by the runner and the market-data consumer: the Redis client they use,
an interruptible sleep, the signal-driven entry point, and a guard against a swallowed cancellation.

The client never retries on its own (`Retry(NoBackoff(), 0)`): a Redis error must reach our
loops, which then rebuild their state from Redis. `raise_if_cancelling` exists because a
cancellation that lands inside a blocking read can come back out of redis-py as a timeout or
connection error; our loops check the task's pending cancellation before trying again, so
`task.cancel()` always ends them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any


def redis_client(url: str, block_ms: int) -> Any:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=2,
                                   socket_timeout=max(5.0, block_ms / 1000 + 5))


def raise_if_cancelling() -> None:
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds` or until `stop` is set, whichever comes first."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        raise_if_cancelling()


def serve_until_signalled(markets: list[str] | tuple[str, ...], run: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """Entry-point body of `coffer matcher run` / `marketdata`: log to stderr, run `run(stop)`
    until SIGTERM/SIGINT sets `stop`, then return 0."""
    from matcher.errors import MatcherError

    if not markets:
        raise MatcherError("give at least one --market")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    asyncio.run(main())
    return 0
