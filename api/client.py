"""A small Python client for the trading API that signs its requests (httpx + hmac).

Used by the tests, the benchmarks and the README examples:

    async with CofferClient("http://127.0.0.1:8000", key_id, secret) as c:
        await c.place_order(market="BTC-USDT", side="buy", type="limit", price="30000.00", quantity="0.01")

Every private call is signed as api/signing.py describes, with a fresh millisecond timestamp,
so no two requests share a signature (two requests in the same millisecond with identical
method, path, query and body would; the client then waits for the next millisecond).
Non-2xx answers raise `ClientError` carrying the status, the JSON body and `Retry-After`.
The secret is kept out of repr.
"""

from __future__ import annotations

import json as jsonlib
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from api.signing import signed_headers
from coffer.settings import Secret


class ClientError(Exception):
    """A non-2xx answer from the API."""

    def __init__(self, status_code: int, body: Any, retry_after_s: int | None) -> None:
        super().__init__(f"HTTP {status_code}: {body}")
        self.status_code = status_code
        self.body = body
        self.retry_after_s = retry_after_s


def encode_query(params: dict[str, Any] | None) -> str:
    """The query string the client sends and signs (None values dropped, order kept)."""
    if not params:
        return ""
    return urlencode({k: v for k, v in params.items() if v is not None}, quote_via=quote)


class CofferClient:
    """Async client; `key_id`/`secret` may be empty for public calls only."""

    def __init__(self, base_url: str, key_id: str = "", secret: str = "", *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout_s)
        self.key_id = key_id
        self._secret = Secret(secret)
        self._last_ts_ms = 0

    def __repr__(self) -> str:
        return f"CofferClient(base_url={str(self._http.base_url)!r}, key_id={self.key_id!r})"

    async def __aenter__(self) -> CofferClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _timestamp_ms(self) -> int:
        ts = time.time_ns() // 1_000_000
        if ts <= self._last_ts_ms:
            ts = self._last_ts_ms + 1
        self._last_ts_ms = ts
        return ts

    async def raw(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                  content: bytes | None = None, signed: bool = True,
                  headers: dict[str, str] | None = None) -> httpx.Response:
        """Send a request (signed unless `signed=False`) and return the response as is."""
        query = encode_query(params)
        body = content if content is not None else (b"" if json is None else jsonlib.dumps(json).encode())
        all_headers = {"content-type": "application/json"} if body else {}
        if signed:
            all_headers.update(signed_headers(self.key_id, self._secret.get(), self._timestamp_ms(),
                                              method, path, query, body))
        all_headers.update(headers or {})
        url = f"{path}?{query}" if query else path
        return await self._http.request(method, url, content=body or None, headers=all_headers)

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
                   signed: bool = True) -> Any:
        """Send a request and return the decoded JSON; non-2xx raises `ClientError`."""
        resp = await self.raw(method, path, params=params, json=json, signed=signed)
        try:
            body: Any = resp.json()
        except ValueError:
            body = resp.text
        if resp.status_code >= 300:
            retry = resp.headers.get("retry-after")
            raise ClientError(resp.status_code, body, int(retry) if retry and retry.isdigit() else None)
        return body

    # -- public ---------------------------------------------------------------------------
    async def time(self) -> Any:
        return await self.call("GET", "/api/v1/time", signed=False)

    async def markets(self) -> Any:
        return await self.call("GET", "/api/v1/markets", signed=False)

    async def depth(self, market: str, limit: int | None = None) -> Any:
        return await self.call("GET", "/api/v1/depth", params={"market": market, "limit": limit}, signed=False)

    async def trades(self, market: str, limit: int | None = None) -> Any:
        return await self.call("GET", "/api/v1/trades", params={"market": market, "limit": limit}, signed=False)

    async def klines(self, market: str, interval: str, start: int | None = None, end: int | None = None,
                     limit: int | None = None) -> Any:
        params = {"market": market, "interval": interval, "start": start, "end": end, "limit": limit}
        return await self.call("GET", "/api/v1/klines", params=params, signed=False)

    # -- private --------------------------------------------------------------------------
    async def place_order(self, **fields: Any) -> Any:
        """POST /api/v1/orders with the given JSON fields (decimal strings for amounts)."""
        return await self.call("POST", "/api/v1/orders", json=fields)

    async def cancel_order(self, order_id: int | str) -> Any:
        return await self.call("DELETE", f"/api/v1/orders/{order_id}")

    async def cancel_all(self, market: str | None = None) -> Any:
        return await self.call("DELETE", "/api/v1/orders", params={"market": market})

    async def order(self, order_id: int | str) -> Any:
        return await self.call("GET", f"/api/v1/orders/{order_id}")

    async def orders(self, market: str | None = None, status: str = "all",
                     client_order_id: str | None = None) -> Any:
        return await self.call("GET", "/api/v1/orders", params={"market": market, "status": status,
                                                                 "client_order_id": client_order_id})

    async def fills(self, market: str | None = None) -> Any:
        return await self.call("GET", "/api/v1/fills", params={"market": market})

    async def balances(self) -> Any:
        return await self.call("GET", "/api/v1/balances")

    async def deposits(self) -> Any:
        return await self.call("GET", "/api/v1/deposits")

    async def deposit_address(self, asset: str) -> Any:
        return await self.call("GET", "/api/v1/deposit-address", params={"asset": asset})

    def ws_login(self) -> dict[str, Any]:
        """The signed login message for the WebSocket (`GET /ws`, empty query and body)."""
        ts = self._timestamp_ms()
        headers = signed_headers(self.key_id, self._secret.get(), ts, "GET", "/ws", "", b"")
        return {"op": "login", "key": self.key_id, "ts": ts, "sig": headers["X-Coffer-Signature"]}
