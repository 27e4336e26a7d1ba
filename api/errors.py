"""Errors of the API package: what a client or operator did wrong, in words they can act on.

`ApiError` is the root. The HTTP layer turns each subclass into a 4xx JSON body
`{"error": <code>, "field": <field or null>, "reason": <text>}`; the CLI prints the message
as one line. Messages never carry secrets.
"""

from __future__ import annotations


class ApiError(Exception):
    """Root of the API package's errors."""

    status_code = 400
    code = "bad_request"

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class AuthError(ApiError):
    """The request is not signed, or not signed right (401)."""

    status_code = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    """The key is valid but may not do this (403)."""

    status_code = 403
    code = "forbidden"


class NotFoundError(ApiError):
    """The thing asked for does not exist or is not the caller's (404)."""

    status_code = 404
    code = "not_found"


class ValidationError(ApiError):
    """A field of the request is missing or has a value that cannot be used (400)."""

    status_code = 400
    code = "invalid"


class RateLimitedError(ApiError):
    """Too many requests for this key in the current window (429)."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, reason: str, *, retry_after_s: int) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s


class UnavailableError(ApiError):
    """A dependency (PostgreSQL, Redis, the order pipeline) is not ready (503)."""

    status_code = 503
    code = "unavailable"


class CredentialsError(ApiError):
    """Creating or loading API credentials failed (unknown user, missing master key)."""
