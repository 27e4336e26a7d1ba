"""One HTTP request with the retry policy: the shared transport of the Esplora and JSON-RPC clients.

Retries 429, 408, 5xx, timeouts and connection errors with back-off and jitter; other 4xx
answers are returned to the caller, which decides (404 often means "not yet"). Messages
carry the path only, never the node URL, which may hold an API key.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from watchers.errors import ChainClientError
from watchers.retry import RetryPolicy, backoff_delay_s, retryable_status

log = logging.getLogger("watchers.http")

Sleep = Callable[[float], Awaitable[None]]


async def request_with_retry(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    policy: RetryPolicy,
    what: str,
    content: bytes | str | None = None,
    json: Any = None,
    sleep: Sleep = asyncio.sleep,
    rng: random.Random | None = None,
) -> httpx.Response:
    """Send until a non-retryable answer arrives; raise ChainClientError when attempts run out."""
    attempt = 0
    while True:
        reason: str
        try:
            response = await client.request(method, path, content=content, json=json, timeout=policy.timeout_s)
        except httpx.TimeoutException:
            reason = "timeout"
        except httpx.TransportError as exc:
            reason = f"transport error {type(exc).__name__}"
        else:
            if not retryable_status(response.status_code):
                return response
            reason = f"HTTP {response.status_code}"
        attempt += 1
        if policy.max_attempts is not None and attempt >= policy.max_attempts:
            raise ChainClientError(f"{what}: gave up after {attempt} attempts (last: {reason})")
        delay = backoff_delay_s(attempt - 1, policy, rng)
        log.warning("%s: %s, retry %d in %.2f s", what, reason, attempt, delay)
        await sleep(delay)
