"""The HTTP and WebSocket edges of Coffer.

- `api.trading_app`: the public trading API (`coffer api trading`): markets, depth, trades,
  K-lines; signed orders, fills, balances, deposits, deposit addresses; the WebSocket `/ws`.
- `api.deposits_app`: the internal deposit-address API (`coffer api deposits`, service token).
- `api.client.CofferClient`: a small signing client (tests, benchmarks, README examples).
- `api.signing`: the HMAC-SHA256 request-signing scheme both sides share.

Only light modules are imported here, so `coffer --help` stays fast.
"""

from __future__ import annotations

from api.errors import ApiError, AuthError, NotFoundError, RateLimitedError, ValidationError

__all__ = ["ApiError", "AuthError", "NotFoundError", "RateLimitedError", "ValidationError"]
