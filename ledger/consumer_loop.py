"""The run loop the intake and settlement consumers share: step until stopped, and after any
error back off, reload state and recover (`start()` again) before the next step.

A consumer provides `start`, `step`, `flush_events`, a `_ahead` read-ahead and an `errors`
counter; `label` names it in log lines ("intake 3", "settlement BTC-USDT").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ledger.intake import ReadAhead

log = logging.getLogger("ledger.consumers")


class RecoveringLoop:
    """Mixin: `run(stop)` for a stream consumer whose effects and offset commit together."""

    errors: int
    _ahead: ReadAhead

    @property
    def label(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def step(self, block_ms: int | None = None) -> int:
        raise NotImplementedError

    async def flush_events(self) -> None:
        raise NotImplementedError

    async def run(self, stop: asyncio.Event) -> None:
        """Loop until `stop` is set; on any error back off (0.2 s doubling to 5 s), then
        recover through `start()` (reload from PostgreSQL, re-send, re-forward)."""
        backoff = 0.2
        started = False
        while not stop.is_set():
            try:
                if not started:
                    await self.start()
                    started = True
                await self.step()
                backoff = 0.2
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
