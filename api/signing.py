"""Request signing: the HMAC-SHA256 scheme shared by the trading API and its client.

Pure functions, no I/O. A signed request carries three headers:
`X-Coffer-Key` (the key id), `X-Coffer-Timestamp` (Unix time in milliseconds) and
`X-Coffer-Signature` (lower-case hex HMAC-SHA256 with the key's secret over the canonical
message). The canonical message is the bytes
`timestamp_ms "\\n" METHOD "\\n" path "\\n" query "\\n"` followed by the raw body, where
`path` is the URL path as sent (e.g. `/api/v1/orders`) and `query` the raw query string
without the `?` (empty when there is none). The server recomputes it from what it received,
so any change to method, path, query, body or timestamp breaks the signature.
The WebSocket login signs the same message for `GET /ws` with an empty query and body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_HEADER = "X-Coffer-Key"
TIMESTAMP_HEADER = "X-Coffer-Timestamp"
SIGNATURE_HEADER = "X-Coffer-Signature"

KEY_ID_PREFIX = "ck_"
SECRET_BYTES = 32
SIGNATURE_HEX_LEN = 64


def canonical_message(timestamp_ms: int, method: str, path: str, query: str, body: bytes) -> bytes:
    """The bytes that are signed; `query` is the raw query string without `?`."""
    head = f"{timestamp_ms}\n{method.upper()}\n{path}\n{query}\n".encode()
    return head + body


def sign(secret: str, timestamp_ms: int, method: str, path: str, query: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the canonical message with `secret` (its UTF-8 bytes as the key)."""
    msg = canonical_message(timestamp_ms, method, path, query, body)
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def signature_matches(secret: str, signature: str, timestamp_ms: int, method: str, path: str,
                      query: str, body: bytes) -> bool:
    """Constant-time comparison of `signature` with the expected one."""
    expected = sign(secret, timestamp_ms, method, path, query, body)
    return hmac.compare_digest(expected, signature.lower())


def new_key_id() -> str:
    """A public key id: `ck_` and 24 hex digits (96 random bits)."""
    return KEY_ID_PREFIX + secrets.token_hex(12)


def new_secret() -> str:
    """A new API secret: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def signed_headers(key_id: str, secret: str, timestamp_ms: int, method: str, path: str, query: str,
                   body: bytes) -> dict[str, str]:
    """The three auth headers for a request."""
    return {
        KEY_HEADER: key_id,
        TIMESTAMP_HEADER: str(timestamp_ms),
        SIGNATURE_HEADER: sign(secret, timestamp_ms, method, path, query, body),
    }
