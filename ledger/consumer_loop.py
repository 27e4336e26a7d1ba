"""The run loop the intake and settlement consumers share: step until stopped, and after any
error back off, reload state and recover (`start()` again) before the next step.

A consumer provides `start`, `step`, `flush_events`, a `_ahead` read-ahead and an `errors`
counter; `label` names it in log lines ("intake 3", "settlement BTC-USDT").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from coffer import gc_policy

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ledger.intake import ReadAhead

log = logging.getLogger("ledger.consumers")


class RecoveringLoop:
    """Mixin: `run(stop)` for a stream consumer whose effects and offset commit together."""

    errors: int
    _ahead: ReadAhead
    _publishing: asyncio.Task[None] | None  # user events of the last batch, published in the background

    @property
    def label(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def step(self, block_ms: int | None = None) -> int:
        raise NotImplementedError

    async def flush_events(self) -> None:
        raise NotImplementedError

    async def _flush_publishing(self) -> None:
        """Wait for the user events published in the background (best effort: pub/sub is
        at-most-once and the batch is committed, so a failure is only logged)."""
        task, self._publishing = self._publishing, None
        if task is not None:
            try:
                await task
            except Exception as exc:
                log.warning("%s: user events not published: %s", self.label, exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; on any error back off (0.2 s doubling to 5 s), then
        recover through `start()` (reload from PostgreSQL, re-send, re-forward)."""
        backoff = 0.2
        started = False
        try:
            while not stop.is_set():
                try:
                    if not started:
                        await self.start()
                        started = True
                    await self.step()
                    backoff = 0.2
                    gc_policy.between_batches()
                except asyncio.CancelledError:
                    self._ahead.drop()
                    await self.flush_events()
                    raise
                except Exception as exc:
                    self.errors += 1
                    log.warning("%s: %s: %s; recovering in %.1f s", self.label, type(exc).__name__, exc, backoff)
                    started = False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 5.0)
            self._ahead.drop()
            await self.flush_events()
        finally:
            log.info("%s stopped%s", self.label, self.summary())

    def summary(self) -> str:
        """What the stop's log line adds (counters of the consumer's own)."""
        return f" ({self.errors} recovered failure(s))"


class StreamTrimmer:
    """Trims a consumed stream behind a consumer's committed offset, at most every `every_s`:
    the entries before it are never read again (a restart reads after the offset stored in
    PostgreSQL, and re-sends come from PostgreSQL, not from the stream). `XTRIM ... MINID ~`
    drops whole stream nodes only: cheap, and it never removes the entry at `min_id` or after.
    Best effort: a failure is logged and retried at the next chance."""

    def __init__(self, redis: Redis, stream: str, every_s: float = 1.0) -> None:
        self.redis = redis
        self.stream = stream
        self.every_s = every_s
        self._last = time.monotonic()
        self.trims = 0

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def skip(self) -> None:
        """Nothing to trim now: ask again after `every_s`."""
        self._last = time.monotonic()

    async def trim(self, min_id: str) -> None:
        self._last = time.monotonic()
        if min_id == "0-0":
            return
        try:
            reply: Any = await self.redis.xtrim(self.stream, minid=min_id, approximate=True)
        except Exception as exc:  # the stream only grows a little longer
            log.warning("trimming %s before %s failed: %s", self.stream, min_id, exc)
            return
        self.trims += 1
        log.debug("trimmed %s entries of %s before %s", reply, self.stream, min_id)
