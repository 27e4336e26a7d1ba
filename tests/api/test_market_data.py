"""Public market data over REST and WebSocket from the matcher's real market-data consumer:
depth shows resting orders, trades and K-lines show fills, exact decimal strings."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.client import ClientError, CofferClient
from tests.api.server import config_for, credit, new_user, order_pipeline, running_api, seed_markets


async def _until(pred: Any, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await pred()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def _next_data(ws: ClientConnection, channel: str, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if msg.get("channel") == channel and "data" in msg:
            return msg["data"]


@pytest.mark.asyncio
async def test_depth_trades_klines_rest_and_ws(pipeline_db: str, redis_url: str, tmp_path: Path) -> None:
    db_url = pipeline_db
    await seed_markets(db_url)
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    await credit(db_url, alice, "ETH", 10 * 10**9, "md-eth-a")
    await credit(db_url, bob, "USDT", 100_000 * 10**6, "md-usdt-b")
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, order_pipeline(db_url, redis_url, 2), \
            CofferClient(url, a_key, a_secret) as a, CofferClient(url, b_key, b_secret) as b, \
            connect(url.replace("http", "ws") + "/ws") as ws:
        for channel in ("depth:ETH-USDT", "trades:ETH-USDT", "kline:1m:ETH-USDT", "kline:1h:ETH-USDT"):
            await ws.send(json.dumps({"op": "subscribe", "channel": channel}))
        # bad requests name their field
        for params, field in (({"market": "ETH-USDT", "interval": "2m"}, "interval"),
                              ({"market": "XYZ", "interval": "1m"}, "market"),
                              ({"interval": "1m"}, "market")):
            with pytest.raises(ClientError) as info:
                await a.call("GET", "/api/v1/klines", params=params, signed=False)
            assert info.value.status_code == 400 and info.value.body["field"] == field

        empty = await _next_data(ws, "depth:ETH-USDT")  # the snapshot that follows the subscription
        assert empty == {"snapshot": True, "market": "ETH-USDT", "update_id": 0, "bids": [], "asks": []}
        await a.place_order(market="ETH-USDT", side="sell", price="2000.50", quantity="1.5")
        await a.place_order(market="ETH-USDT", side="sell", price="2001.00", quantity="0.5")
        diff = await _next_data(ws, "depth:ETH-USDT")
        assert diff["asks"][0] == ["2000.50", "1.5000"]

        async def two_asks() -> Any:
            book = await a.depth("ETH-USDT")
            return book if len(book["asks"]) == 2 else None

        book = await _until(two_asks)
        assert book["asks"] == [["2000.50", "1.5000"], ["2001.00", "0.5000"]] and book["bids"] == []
        # a late depth subscriber gets the snapshot first
        async with connect(url.replace("http", "ws") + "/ws") as late:
            await late.send(json.dumps({"op": "subscribe", "channel": "depth:ETH-USDT"}))
            snap = await _next_data(late, "depth:ETH-USDT")
            assert snap["snapshot"] is True and snap["asks"] == book["asks"]
            assert snap["update_id"] == book["update_id"]

        filled = await b.place_order(market="ETH-USDT", side="buy", price="2001.00", quantity="1.7")
        assert filled["status"] == "filled" and filled["filled_quote"] == "3400.950000"
        trades_ws = await _next_data(ws, "trades:ETH-USDT")
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades_ws] == [
            ("2000.50", "1.5000", "buy"), ("2001.00", "0.2000", "buy")]

        async def trades_in() -> Any:
            got = await a.trades("ETH-USDT")
            return got if len(got) == 2 else None

        trades = await _until(trades_in)
        assert [(t["price"], t["quantity"], t["quote_quantity"]) for t in trades] == [
            ("2001.00", "0.2000", "400.200000"), ("2000.50", "1.5000", "3000.750000")]

        async def after_trade() -> Any:
            book = await a.depth("ETH-USDT")
            return book if book["asks"] == [["2001.00", "0.3000"]] else None

        assert await _until(after_trade)
        kline_ws = None
        while kline_ws is None or kline_ws[5] != "1.7000":
            kline_ws = await _next_data(ws, "kline:1m:ETH-USDT")
        for interval in ("1m", "1h", "1w"):
            rows = await a.klines("ETH-USDT", interval)
            assert len(rows) == 1, (interval, rows)
            # [open_time, open, high, low, close, volume, quote_volume]
            assert rows[0][1:] == ["2000.50", "2001.00", "2000.50", "2001.00", "1.7000", "3400.950000"]
        assert kline_ws[1:] == ["2000.50", "2001.00", "2000.50", "2001.00", "1.7000", "3400.950000"]
        week_start = (await a.klines("ETH-USDT", "1w"))[0][0]
        assert time.gmtime(week_start / 1000).tm_wday == 0  # Monday 00:00 UTC
        hour = await _next_data(ws, "kline:1h:ETH-USDT")
        assert hour[0] % 3_600_000 == 0
