"""The API when a backing service dies: Redis killed (SIGKILL) answers 503 with Retry-After and
freezes nothing; after Redis restarts on its AOF the same API process serves again, its pub/sub
hub resubscribed (orders get their replies)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api.client import CofferClient
from coffer.localservices import RedisServer
from tests.api.server import balances_of, config_for, credit, intake_consumers, new_user, running_api, seed_markets


@pytest.mark.asyncio
async def test_redis_killed_then_restarted(db_url: str, fresh_redis: RedisServer, tmp_path: Path) -> None:
    await seed_markets(db_url)
    user, key, secret = await new_user(db_url, tmp_path)
    await credit(db_url, user, "USDT", 1_000_000_000, "fault-usdt")
    config = config_for(db_url, fresh_redis.url, tmp_path, order_wait_ms=1_000)
    async with running_api(config) as url, CofferClient(url, key, secret) as c:
        assert (await c.raw("GET", "/api/v1/balances")).status_code == 200
        fresh_redis.kill()
        resp = await c.raw("GET", "/api/v1/balances")
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert "unavailable" in resp.json()["reason"]
        resp = await c.raw("POST", "/api/v1/orders", json={"market": "BTC-USDT", "side": "buy",
                                                           "price": "30000.0", "quantity": "0.01"})
        assert resp.status_code == 503
        assert await balances_of(db_url, user) == {"USDT": (1_000_000_000, 0)}

        fresh_redis.start()
        for _ in range(100):
            if (await c.raw("GET", "/api/v1/balances")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the API did not recover after Redis came back")
        async with intake_consumers(db_url, fresh_redis.url, 2):
            # a client retries with the same client_order_id: whatever got through is not doubled
            placed: dict[str, object] = {}
            for _ in range(30):
                resp = await c.raw("POST", "/api/v1/orders", json={
                    "market": "BTC-USDT", "side": "buy", "price": "30000.0", "quantity": "0.01",
                    "client_order_id": "after-restart"})
                assert resp.status_code in (201, 202, 200, 503), resp.text
                if resp.status_code != 503 and resp.json()["id"] is not None:
                    placed = resp.json()
                    break
                await asyncio.sleep(0.1)
            assert placed.get("status") == "pending" and placed.get("id") is not None
        assert await balances_of(db_url, user) == {"USDT": (700_000_000, 300_000_000)}
