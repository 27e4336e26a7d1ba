"""POST/GET /api/v1/withdrawals on the real trading app (uvicorn, intake consumers, PostgreSQL,
Redis): bad input is refused with a reason and nothing is held; a good request is held through the
intake stream; a retry with the same client id answers the same withdrawal."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

from api.client import CofferClient
from api.trading_app import create_app
from coffer.localservices import free_port
from tests.api.server import config_for, credit, intake_consumers, new_user, seed_markets

PATH = "/api/v1/withdrawals"
GOOD_BTC = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@contextlib.asynccontextmanager
async def app_with_withdrawals(db_url: str, redis_url: str, data_dir: Path) -> AsyncIterator[str]:
    app = create_app(config_for(db_url, redis_url, data_dir))
    assert PATH in app.openapi()["paths"]  # the router is included by api/trading_app.py
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           access_log=False))
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


BAD = [
    ({"asset": "BTC", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt08z", "amount": "0.001"},
     "address", "checksum"),
    ({"asset": "BTC", "address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "amount": "0.001"},
     "address", "mainnet, not regtest"),
    ({"asset": "ETH", "address": "0x52908400098527886E0F7030069857D2E4169EE7".replace("E7", "e7"), "amount": "0.01"},
     "address", "EIP-55"),
    ({"asset": "ETH", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "amount": "0.01"},
     "address", "0x"),
    ({"asset": "BTC", "address": GOOD_BTC, "amount": "0.5"}, "amount", "insufficient available BTC"),
    ({"asset": "BTC", "address": GOOD_BTC, "amount": "0.00005"}, "amount", "below the minimum"),
    ({"asset": "BTC", "address": GOOD_BTC, "amount": "0.000000001"}, "amount", "too many decimals"),
    ({"asset": "BTC", "address": GOOD_BTC, "amount": 0.001}, "amount", "must be a string"),
    ({"asset": "DOGE", "address": GOOD_BTC, "amount": "1"}, "asset", "unknown asset"),
    ({"asset": "BTC", "address": GOOD_BTC}, "amount", "is required"),
]


@pytest.mark.asyncio
async def test_withdrawal_api_refuses_bad_input_and_holds_good(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    user_id, key_id, secret = await new_user(db_url, tmp_path)
    await credit(db_url, user_id, "BTC", 100_000, f"dep-{user_id}-btc")
    await credit(db_url, user_id, "ETH", 10**9, f"dep-{user_id}-eth")
    conn = await asyncpg.connect(db_url)
    try:
        async with intake_consumers(db_url, redis_url, 2), \
                app_with_withdrawals(db_url, redis_url, tmp_path) as url, \
                CofferClient(url, key_id, secret) as client:
            for body, field, words in BAD:
                resp = await client.raw("POST", PATH, json=body)
                assert resp.status_code == 400, (body, resp.text)
                answer: Any = resp.json()
                assert answer["field"] == field and words in answer["reason"], (body, answer)
            assert await conn.fetchval("SELECT count(*) FROM withdrawals") == 0
            frozen = await conn.fetch("SELECT asset, available, frozen FROM balances WHERE user_id = $1 ORDER BY asset",
                                      user_id)
            assert [(b["asset"], b["available"], b["frozen"]) for b in frozen] == [("BTC", 100_000, 0),
                                                                                  ("ETH", 10**9, 0)]
            unsigned = await client.raw("POST", PATH, json={"asset": "BTC", "address": GOOD_BTC, "amount": "0.0001"},
                                        signed=False)
            assert unsigned.status_code == 401

            good = {"asset": "BTC", "address": GOOD_BTC.upper(), "amount": "0.0005", "client_id": "w-1"}
            created = await client.raw("POST", PATH, json=good)
            assert created.status_code == 201, created.text
            view = created.json()
            assert (view["status"], view["amount"], view["fee"], view["held"]) == (
                "held", "0.00050000", "0.00010000", "0.00060000")
            assert view["address"] == GOOD_BTC and view["client_id"] == "w-1"
            again = await client.raw("POST", PATH, json=good)
            assert again.status_code == 200 and again.json()["id"] == view["id"] and again.json()["duplicate"]
            listed = await client.call("GET", PATH)
            assert [w["id"] for w in listed] == [view["id"]]
            bal = await conn.fetchrow("SELECT available, frozen FROM balances WHERE user_id = $1 AND asset = 'BTC'",
                                      user_id)
            assert (bal["available"], bal["frozen"]) == (40_000, 60_000)
            assert await conn.fetchval("SELECT count(*) FROM withdrawals") == 1
    finally:
        await conn.close()
