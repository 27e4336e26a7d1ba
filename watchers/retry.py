"""Retry policy for chain API calls: exponential back-off with full jitter, never giving up by default.

Public node APIs rate-limit (HTTP 429 without Retry-After), fail with 5xx and time out. A
watcher must not skip a block because of that, so the daemon's policy retries forever with a
capped delay; tests use a bounded `max_attempts`. `backoff_delay_s` is pure (the random
source is injected) so the schedule is testable without sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`max_attempts=None` retries forever; delays grow as base * 2**attempt up to `max_delay_s`."""

    base_delay_s: float = 0.1
    max_delay_s: float = 10.0
    max_attempts: int | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s:
            raise ValueError("retry delays must satisfy 0 < base_delay_s <= max_delay_s")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 or None")


def backoff_delay_s(attempt: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (0-based): uniform in [cap/2, cap] ("equal jitter").

    cap = min(max_delay_s, base_delay_s * 2**attempt). Half the cap is kept so the delay
    keeps growing under sustained 429s; the random half spreads clients apart.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    cap = min(policy.max_delay_s, policy.base_delay_s * (2 ** min(attempt, 62)))
    r: float = (rng or random).random()
    return float(cap / 2 + r * cap / 2)


def retryable_status(status_code: int) -> bool:
    """HTTP statuses worth retrying: 429 (rate limit), 408 and every 5xx."""
    return status_code in (408, 429) or 500 <= status_code <= 599
