"""Authentication of signed requests: header parsing, timestamp window, replay and rate limits.

`Authenticator.authenticate(...)` checks, in order: the three auth headers are present and
well formed; the timestamp is within `window_ms` of the server clock (either side); the key
exists and is not revoked; the HMAC matches (api/signing.py); then, in one Redis round trip,
the signature is recorded with SET NX (TTL twice the window, so a replay inside the window
is refused) and the key's per-second request counter is incremented (more than
`rate_per_s` requests in one second answer 429 with `Retry-After: 1`). It returns the
caller's `Principal`. Nothing here logs or echoes a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from api import redis_keys
from api.errors import AuthError, RateLimitedError
from api.keystore import KeyCache
from api.signing import (
    KEY_HEADER,
    KEY_ID_PREFIX,
    SIGNATURE_HEADER,
    SIGNATURE_HEX_LEN,
    TIMESTAMP_HEADER,
    signature_matches,
)

DEFAULT_WINDOW_MS = 10_000
DEFAULT_RATE_PER_S = 50


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the user and the key used."""

    user_id: int
    key_id: str


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_timestamp(raw: str | None) -> int:
    if raw is None or raw == "":
        raise AuthError(f"missing header {TIMESTAMP_HEADER} (Unix time in milliseconds)", field=TIMESTAMP_HEADER)
    if not raw.isdigit() or len(raw) > 16:
        raise AuthError("must be Unix time in milliseconds (digits only)", field=TIMESTAMP_HEADER)
    return int(raw)


def check_timestamp(timestamp_ms: int, now_ms: int, window_ms: int) -> None:
    """Refuse timestamps more than `window_ms` away from `now_ms` (clock skew or a stale request)."""
    skew_ms = timestamp_ms - now_ms
    if abs(skew_ms) > window_ms:
        where = "in the future" if skew_ms > 0 else "old"
        raise AuthError(
            f"timestamp is {abs(skew_ms)} ms {where}; requests must be signed within {window_ms} ms "
            "of the server time (see GET /api/v1/time)",
            field=TIMESTAMP_HEADER,
        )


class Authenticator:
    """Verifies signed requests against keys (KeyCache) and Redis (replay, rate limit)."""

    def __init__(self, keys: KeyCache, redis: Any, *, window_ms: int = DEFAULT_WINDOW_MS,
                 rate_per_s: int = DEFAULT_RATE_PER_S, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._keys = keys
        self._redis = redis
        self._window_ms = window_ms
        self._rate_per_s = rate_per_s
        self._clock_ms = clock_ms

    @property
    def window_ms(self) -> int:
        return self._window_ms

    async def authenticate(self, headers: Mapping[str, str], method: str, path: str, query: str,
                           body: bytes) -> Principal:
        key_id = headers.get(KEY_HEADER.lower()) or headers.get(KEY_HEADER)
        ts_raw = headers.get(TIMESTAMP_HEADER.lower()) or headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER)
        return await self.verify(key_id, ts_raw, signature, method, path, query, body)

    async def verify(self, key_id: str | None, ts_raw: str | None, signature: str | None, method: str,
                     path: str, query: str, body: bytes) -> Principal:
        if not key_id:
            raise AuthError(f"missing header {KEY_HEADER} (your API key id)", field=KEY_HEADER)
        if not key_id.startswith(KEY_ID_PREFIX) or len(key_id) > 64:
            raise AuthError("is not an API key id", field=KEY_HEADER)
        timestamp_ms = parse_timestamp(ts_raw)
        if not signature:
            raise AuthError(f"missing header {SIGNATURE_HEADER} (hex HMAC-SHA256)", field=SIGNATURE_HEADER)
        if len(signature) != SIGNATURE_HEX_LEN or any(c not in "0123456789abcdefABCDEF" for c in signature):
            raise AuthError("must be 64 hex digits (HMAC-SHA256)", field=SIGNATURE_HEADER)
        check_timestamp(timestamp_ms, self._clock_ms(), self._window_ms)
        key = await self._keys.get(key_id)
        if key is None:
            raise AuthError("unknown or revoked API key", field=KEY_HEADER)
        if not signature_matches(key.secret.get(), signature, timestamp_ms, method, path, query, body):
            raise AuthError(
                "signature does not match: sign timestamp, method, path, query and body with your secret",
                field=SIGNATURE_HEADER,
            )
        await self._admit(key_id, signature.lower())
        return Principal(key.user_id, key_id)

    async def _admit(self, key_id: str, signature: str) -> None:
        second = self._clock_ms() // 1000
        counter = redis_keys.rate_counter(key_id, second)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(redis_keys.signature_seen(key_id, signature), b"1", nx=True, px=2 * self._window_ms)
        pipe.incr(counter)
        pipe.expire(counter, 2)
        fresh, count, _ = await pipe.execute()
        if not fresh:
            raise AuthError("this signature was already used; sign each request anew", field=SIGNATURE_HEADER)
        if int(count) > self._rate_per_s:
            raise RateLimitedError(
                f"more than {self._rate_per_s} requests per second for this API key", retry_after_s=1
            )
