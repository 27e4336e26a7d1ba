"""Orders through the whole real path (API -> intake -> matcher -> settlement) over HTTP:
crossing orders fill, the answers carry the engine's outcome, fills and balances are right to
the unit with fees from the asset received, a resting order is cancelled and its funds freed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from api.client import CofferClient
from tests.api.server import (
    balances_of,
    config_for,
    credit,
    new_user,
    order_pipeline,
    running_api,
    seed_markets,
)


@pytest.mark.asyncio
async def test_crossing_orders_fill_and_settle_to_the_unit(pipeline_db: str, redis_url: str,
                                                           tmp_path: Path) -> None:
    db_url = pipeline_db
    await seed_markets(db_url)
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    await credit(db_url, alice, "BTC", 50_000_000, "flow-btc-a")  # 0.5 BTC
    await credit(db_url, bob, "USDT", 1_000_000_000, "flow-usdt-b")  # 1000 USDT
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, \
            order_pipeline(db_url, redis_url, 2), \
            CofferClient(url, a_key, a_secret) as a, CofferClient(url, b_key, b_secret) as b:
        sell = await a.place_order(market="BTC-USDT", side="sell", price="30000.0", quantity="0.01",
                                   client_order_id="ask-1")
        assert sell["status"] == "open", sell
        # bob's limit is above the ask: he trades at the maker's price and gets the difference back
        buy = await b.place_order(market="BTC-USDT", side="buy", price="30100.0", quantity="0.01")
        assert buy["status"] == "filled", buy
        assert buy["filled_quantity"] == "0.01000" and buy["filled_quote"] == "300.000000"

        # 0.01 BTC = 1,000,000 sat for 300 USDT = 300,000,000 units; bob (taker, 20 bps) pays
        # 2,000 sat of the BTC he receives, alice (maker, 10 bps) 300,000 units of the USDT.
        assert await balances_of(db_url, bob) == {"USDT": (700_000_000, 0), "BTC": (998_000, 0)}
        a_bal = await balances_of(db_url, alice)
        assert a_bal == {"BTC": (49_000_000, 0), "USDT": (299_700_000, 0)}
        assert (await a.order(sell["id"]))["status"] == "filled"

        bob_fills = await b.fills()
        assert [(f["side"], f["liquidity"], f["price"], f["quantity"], f["fee"], f["fee_asset"])
                for f in bob_fills] == [("buy", "taker", "30000.0", "0.01000000", "0.00002000", "BTC")]
        alice_fills = await a.fills(market="BTC-USDT")
        assert [(f["side"], f["liquidity"], f["quote_quantity"], f["fee"], f["fee_asset"])
                for f in alice_fills] == [("sell", "maker", "300.000000", "0.300000", "USDT")]
        assert {x["asset"]: x["available"] for x in await b.balances()} == {"BTC": "0.00998000",
                                                                           "USDT": "700.000000"}

        # a resting order, then its cancel: the frozen quote comes back in full
        rest = await b.place_order(market="BTC-USDT", side="buy", price="20000.0", quantity="0.02")
        assert rest["status"] == "open"
        assert await balances_of(db_url, bob) == {"USDT": (300_000_000, 400_000_000), "BTC": (998_000, 0)}
        assert [o["id"] for o in await b.orders(status="open")] == [rest["id"]]
        canceled = await b.cancel_order(rest["id"])
        assert canceled["status"] == "canceled"
        assert await balances_of(db_url, bob) == {"USDT": (700_000_000, 0), "BTC": (998_000, 0)}
        assert await b.orders(status="open") == []
        assert {o["status"] for o in await b.orders(status="closed")} == {"filled", "canceled"}

        # cancel-all over two markets' worth of resting orders
        await a.place_order(market="BTC-USDT", side="sell", price="40000.0", quantity="0.01")
        await a.place_order(market="BTC-USDT", side="sell", price="41000.0", quantity="0.01")
        result = await a.cancel_all("BTC-USDT")
        assert result["canceled"] == 2
        for _ in range(100):
            if (await balances_of(db_url, alice))["BTC"][1] == 0:
                break
            await asyncio.sleep(0.05)
        assert await balances_of(db_url, alice) == a_bal


@pytest.mark.asyncio
async def test_two_api_instances_share_the_pipeline(pipeline_db: str, redis_url: str, tmp_path: Path) -> None:
    """Stateless instances: each gets the ledger's replies on its own channel; either reads any order."""
    db_url = pipeline_db
    await seed_markets(db_url)
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    await credit(db_url, alice, "ETH", 5 * 10**9, "two-eth-a")
    await credit(db_url, bob, "BTC", 10**8, "two-btc-b")
    config = config_for(db_url, redis_url, tmp_path)
    async with running_api(config) as url1, running_api(config) as url2, order_pipeline(db_url, redis_url, 2), \
            CofferClient(url1, a_key, a_secret) as a1, CofferClient(url2, a_key, a_secret) as a2, \
            CofferClient(url2, b_key, b_secret) as b2:
        results = await asyncio.gather(
            a1.place_order(market="ETH-BTC", side="sell", price="0.05000", quantity="1.000"),
            a2.place_order(market="ETH-BTC", side="sell", price="0.05100", quantity="1.000"),
        )
        assert [r["status"] for r in results] == ["open", "open"]
        assert {o["id"] for o in await a2.orders(status="open")} == {r["id"] for r in results}
        take = await b2.place_order(market="ETH-BTC", side="buy", price="0.05100", quantity="1.500")
        assert take["status"] == "filled" and take["filled_quote"] == "0.07550000"
        assert (await a1.order(results[0]["id"]))["status"] == "filled"
        assert (await a1.order(results[1]["id"]))["status"] == "partially_filled"
        assert repr(a1).find(a_secret) == -1


@pytest.mark.asyncio
async def test_time_in_force_post_only_and_market_orders(pipeline_db: str, redis_url: str,
                                                         tmp_path: Path) -> None:
    """The engine's outcomes come back in the answer: post-only that would cross is rejected with
    its reason, IOC remainder expires, FOK that cannot fill is rejected, a market buy by quote
    amount fills; every unfilled part is released to the unit."""
    db_url = pipeline_db
    await seed_markets(db_url)
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    await credit(db_url, alice, "BTC", 10_000_000, "tif-btc-a")
    await credit(db_url, bob, "USDT", 10_000_000_000, "tif-usdt-b")
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, \
            order_pipeline(db_url, redis_url, 2), \
            CofferClient(url, a_key, a_secret) as a, CofferClient(url, b_key, b_secret) as b:
        ask = await a.place_order(market="BTC-USDT", side="sell", price="30000.0", quantity="0.02")
        assert ask["status"] == "open"
        post = await b.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.01", post_only=True)
        assert post["status"] == "rejected" and post["reason"]
        fok = await b.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.03",
                                  time_in_force="FOK")
        assert fok["status"] == "rejected" and fok["filled_quantity"] == "0.00000"
        ioc = await b.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.015",
                                  time_in_force="IOC")
        assert ioc["status"] == "filled" and ioc["filled_quantity"] == "0.01500"
        rest = await b.place_order(market="BTC-USDT", side="buy", price="30000.0", quantity="0.01",
                                   time_in_force="IOC")
        assert rest["status"] == "expired" and rest["filled_quantity"] == "0.00500"
        assert (await a.order(ask["id"]))["status"] == "filled"
        # bob paid 0.02 BTC x 30000 = 600 USDT and holds nothing frozen; fees 20 bps of the BTC
        assert await balances_of(db_url, bob) == {"USDT": (9_400_000_000, 0), "BTC": (1_996_000, 0)}

        await a.place_order(market="BTC-USDT", side="sell", price="31000.0", quantity="0.01")
        mkt = await b.place_order(market="BTC-USDT", side="buy", type="market", quote_quantity="620")
        # 0.01 BTC at 31000 = 310 USDT spent, the other 310 of the 620 released
        assert mkt["filled_quantity"] == "0.01000" and mkt["filled_quote"] == "310.000000"
        assert mkt["status"] in ("filled", "expired")
        assert await balances_of(db_url, bob) == {"USDT": (9_090_000_000, 0), "BTC": (2_994_000, 0)}
