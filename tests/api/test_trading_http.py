"""The trading API over real HTTP (uvicorn), with real PostgreSQL, Redis and the ledger's intake.

Auth failures, rate limits, bad input (each a 4xx naming the field, nothing frozen), users
seeing only their own data, and orders going through `intake{k}` to the ledger.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from api.client import ClientError, CofferClient
from api.signing import signed_headers
from tests.api.server import config_for, credit, intake_consumers, new_user, running_api, seed_markets


async def _frozen_and_orders(db_url: str, user_id: int) -> tuple[int, int]:
    conn = await asyncpg.connect(db_url)
    try:
        frozen = await conn.fetchval("SELECT coalesce(sum(frozen), 0) FROM balances WHERE user_id = $1", user_id)
        orders = await conn.fetchval("SELECT count(*) FROM orders WHERE user_id = $1", user_id)
        return int(frozen), int(orders)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_public_endpoints_and_docs(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, CofferClient(url) as c:
        now = await c.time()
        assert isinstance(now["server_ms"], int)
        markets = {m["symbol"]: m for m in await c.markets()}
        assert set(markets) >= {"BTC-USDT", "ETH-USDT", "ETH-BTC"}
        assert markets["BTC-USDT"]["tick"] == "0.1" and markets["BTC-USDT"]["min_notional"] == "10.000000"
        docs = await c.raw("GET", "/docs", signed=False)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        spec = (await c.raw("GET", "/openapi.json", signed=False)).json()
        assert "/api/v1/orders" in spec["paths"] and "/api/v1/balances" in spec["paths"]


@pytest.mark.asyncio
async def test_auth_failures_over_http(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    user_id, key_id, secret = await new_user(db_url, tmp_path)
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, httpx.AsyncClient(base_url=url) as http:
        async def get(headers: dict[str, str]) -> httpx.Response:
            return await http.get("/api/v1/balances", headers=headers)

        resp = await get({})
        assert resp.status_code == 401 and resp.json()["field"] == "X-Coffer-Key"
        now_ms = (await http.get("/api/v1/time")).json()["server_ms"]
        good = signed_headers(key_id, secret, now_ms, "GET", "/api/v1/balances", "", b"")
        assert (await get(good)).status_code == 200
        replay = await get(good)
        assert replay.status_code == 401 and "already used" in replay.json()["reason"]
        bad = dict(signed_headers(key_id, secret, now_ms + 1, "GET", "/api/v1/balances", "", b""))
        sig = bad["X-Coffer-Signature"]
        bad["X-Coffer-Signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
        resp = await get(bad)
        assert resp.status_code == 401 and resp.json()["field"] == "X-Coffer-Signature"
        assert "does not match" in resp.json()["reason"]
        stale = signed_headers(key_id, secret, now_ms - 60_000, "GET", "/api/v1/balances", "", b"")
        resp = await get(stale)
        assert resp.status_code == 401 and resp.json()["field"] == "X-Coffer-Timestamp"
        # the signature binds the query: the same headers for another query are refused
        signed_q = signed_headers(key_id, secret, now_ms + 2, "GET", "/api/v1/fills", "market=BTC-USDT", b"")
        resp = await http.get("/api/v1/fills?market=ETH-USDT", headers=signed_q)
        assert resp.status_code == 401
        assert user_id > 0


@pytest.mark.asyncio
async def test_rate_limit_answers_429_with_retry_after(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    _, key_id, secret = await new_user(db_url, tmp_path)
    async with running_api(config_for(db_url, redis_url, tmp_path, rate_per_s=5)) as url, \
            CofferClient(url, key_id, secret) as c:
        # bursts of concurrent requests: some land in one second beyond the budget of 5, even on
        # a slow machine
        statuses: list[int] = []
        retry_after: str | None = None
        for _ in range(5):
            burst = await asyncio.gather(*[c.raw("GET", "/api/v1/balances") for _ in range(12)])
            statuses += [r.status_code for r in burst]
            limited = [r for r in burst if r.status_code == 429]
            if limited:
                retry_after = limited[0].headers.get("retry-after")
                assert limited[0].json()["error"] == "rate_limited"
                break
        assert 429 in statuses, statuses
        assert set(statuses) <= {200, 429}
        assert retry_after == "1"
        assert statuses.count(200) >= 5


BAD_ORDERS: list[tuple[Any, str, str]] = [
    (b'{"market": "BTC-USDT", "side": "buy",', "body", "malformed JSON"),
    ({"side": "buy", "price": "30000", "quantity": "0.01"}, "market", "required"),
    ({"market": "BTC-USDT", "price": "30000", "quantity": "0.01"}, "side", "required"),
    ({"market": "BTC-USDT", "side": "buy", "quantity": "0.01"}, "price", "required"),
    ({"market": "BTC-USDT", "side": "buy", "price": "-30000", "quantity": "0.01"}, "price", "positive"),
    ({"market": "BTC-USDT", "side": "buy", "price": "30000", "quantity": "0"}, "quantity", "greater than zero"),
    ({"market": "BTC-USDT", "side": "buy", "price": "30000.123", "quantity": "0.01"}, "price", "multiple of the tick"),
    ({"market": "BTC-USDT", "side": "buy", "price": "30000", "quantity": "0.000001"}, "quantity",
     "multiple of the lot"),
    ({"market": "BTC-USDT", "side": "buy", "type": "market", "quote_quantity": "10.0000001"}, "quote_quantity",
     "too many decimals"),
    ({"market": "NOPE-USDT", "side": "buy", "price": "1", "quantity": "1"}, "market", "unknown market"),
    ({"market": "BTC-USDT", "side": "buy", "price": 30000.5, "quantity": "0.01"}, "price", "decimal string"),
]


@pytest.mark.asyncio
async def test_bad_orders_are_4xx_naming_the_field_and_freeze_nothing(db_url: str, redis_url: str,
                                                                       tmp_path: Path) -> None:
    await seed_markets(db_url)
    user_id, key_id, secret = await new_user(db_url, tmp_path)
    await credit(db_url, user_id, "USDT", 100_000_000_000, "bad-orders-usdt")
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, \
            intake_consumers(db_url, redis_url, 2), CofferClient(url, key_id, secret) as c:
        for body, field, words in BAD_ORDERS:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            resp = await c.raw("POST", "/api/v1/orders", content=content)
            assert 400 <= resp.status_code < 500, (body, resp.status_code, resp.text)
            err = resp.json()
            assert err["field"] == field, (body, err)
            assert words in err["reason"], (body, err)
        too_big = await c.raw("POST", "/api/v1/orders", content=b'{"market": "' + b"x" * 20_000 + b'"}')
        assert too_big.status_code == 400 and too_big.json()["field"] == "body"
        assert "larger than" in too_big.json()["reason"]
        # the ledger's own refusal: more than the available balance
        with pytest.raises(ClientError) as info:
            await c.place_order(market="BTC-USDT", side="sell", price="30000", quantity="1")
        assert info.value.status_code == 400 and info.value.body["error"] == "rejected"
        assert info.value.body["reason"]
        frozen, _orders = await _frozen_and_orders(db_url, user_id)
        assert frozen == 0
        balances = {b["asset"]: b for b in await c.balances()}
        assert balances["USDT"] == {"asset": "USDT", "available": "100000.000000", "frozen": "0.000000",
                                    "total": "100000.000000"}


@pytest.mark.asyncio
async def test_users_see_only_their_own_orders_and_balances(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    await credit(db_url, alice, "USDT", 1_000_000_000, "own-usdt-a")
    await credit(db_url, bob, "BTC", 50_000_000, "own-btc-b")
    config = config_for(db_url, redis_url, tmp_path, order_wait_ms=1_500)
    async with running_api(config) as url, intake_consumers(db_url, redis_url, 2), \
            CofferClient(url, a_key, a_secret) as a, CofferClient(url, b_key, b_secret) as b:
        placed = await a.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.01",
                                     client_order_id="a-1")
        # no engine runs in this test: the ledger froze the funds and the order stays pending
        assert placed["status"] == "pending" and isinstance(placed["id"], int)
        assert placed["price"] == "30000.0" and placed["quantity"] == "0.01000"
        order_id = placed["id"]
        a_bal = {x["asset"]: x for x in await a.balances()}
        assert a_bal["USDT"]["frozen"] == "300.000000" and a_bal["USDT"]["available"] == "700.000000"
        assert [o["id"] for o in await a.orders(status="open")] == [order_id]
        assert (await a.order(order_id))["client_order_id"] == "a-1"
        assert [o["id"] for o in await a.orders(client_order_id="a-1")] == [order_id]
        assert await b.orders(client_order_id="a-1") == []
        # a duplicate client_order_id returns the original order, nothing more is frozen
        again = await a.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.01",
                                    client_order_id="a-1")
        assert again["id"] == order_id and again.get("duplicate") is True

        for call in (b.order(order_id), b.cancel_order(order_id)):
            with pytest.raises(ClientError) as info:
                await call
            assert info.value.status_code == 404 and "no order" in info.value.body["reason"]
        assert await b.orders() == []
        assert await b.fills() == []
        assert {x["asset"] for x in await b.balances()} == {"BTC"}
        assert (await a.order(order_id))["status"] == "pending"
        a_after = {x["asset"]: x for x in await a.balances()}
        assert a_after == a_bal
        deposits = await b.deposits()
        assert [(d["asset"], d["amount"], d["state"]) for d in deposits] == [("BTC", "0.50000000", "credited")]
