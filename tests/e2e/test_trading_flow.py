"""End to end with everything real: private Redis and PostgreSQL, the local Bitcoin and Ethereum
test chains, the watchers, the ledger's consumers, the matcher and its market data, the trading
API over HTTP and WebSocket.

Two users get deposit addresses from the API, receive deposits on the test chains (BTC to
alice, an ERC-20 USDT mint to bob), are credited only after the required confirmations, place
crossing orders over HTTP, see the fills over the WebSocket; balances and fees are right to the
unit, public trades, K-lines and depth show the trade, and `coffer ledger audit` is clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import ClientConnection, connect

from api.client import CofferClient
from tests.api.server import balances_of, config_for, new_user, order_pipeline, running_api
from tests.chain_fixtures import BtcChain, EthChain
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import parse_config

SEED = mnemonic_to_seed("abandon " * 11 + "about")


def wallet_config(usdt: str) -> Any:
    eth_xpub = ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize()
    return parse_config({"assets": {
        "BTC": {"chain": "btc", "network": "regtest",
                "xpub": ExtendedKey.from_seed(SEED, "testnet").derive("m/84'/1'/0'").neuter().serialize()},
        "ETH": {"chain": "eth", "network": "regtest", "xpub": eth_xpub},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": eth_xpub, "token": usdt},
    }})


async def in_thread(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


@contextlib.asynccontextmanager
async def watchers(db_url: str, btc: BtcChain, eth: EthChain, btc_start: int, eth_start: int) -> AsyncIterator[None]:
    from watchers.runner import RunOptions, run_watcher

    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_watcher(RunOptions(chain="btc", network="regtest", database_url=db_url,
                                                   node_url=btc.url, start_height=btc_start,
                                                   poll_interval_s=0.1), stop)),
        asyncio.create_task(run_watcher(RunOptions(chain="eth", network="regtest", database_url=db_url,
                                                   node_url=eth.url, start_height=eth_start,
                                                   poll_interval_s=0.1), stop)),
    ]
    try:
        yield
    finally:
        stop.set()
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, errors


async def eventually(fn: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fn()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def next_data(ws: ClientConnection, pred: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
        if "data" in msg and pred(msg):
            return msg


async def ws_login(url: str, client: CofferClient, stack: contextlib.AsyncExitStack) -> ClientConnection:
    ws = await stack.enter_async_context(connect(url.replace("http", "ws") + "/ws"))
    await ws.send(json.dumps(client.ws_login()))
    await ws.send(json.dumps({"op": "subscribe", "channel": "orders"}))
    await ws.send(json.dumps({"op": "subscribe", "channel": "balances"}))
    for _ in range(3):
        msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert msg.get("type") in ("login", "subscribed", "ping"), msg
    return ws


@pytest.mark.asyncio
@pytest.mark.slow
async def test_deposits_trade_fills_fees_market_data_and_audit(
        pipeline_db: str, redis_url: str, tmp_path: Path, btc_chain: BtcChain, eth_chain: EthChain) -> None:
    db_url = pipeline_db
    from ledger.demo import seed_demo

    usdt = (await in_thread(eth_chain.deploy_erc20)).lower()
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract=usdt)
    finally:
        await conn.close()
    alice, a_key, a_secret = await new_user(db_url, tmp_path)
    bob, b_key, b_secret = await new_user(db_url, tmp_path)
    btc_start = await in_thread(btc_chain.tip_height) + 1
    eth_start = await in_thread(eth_chain.block_number) + 1
    config = replace(config_for(db_url, redis_url, tmp_path), wallet=wallet_config(usdt))

    async with running_api(config) as url, order_pipeline(db_url, redis_url, 2), \
            watchers(db_url, btc_chain, eth_chain, btc_start, eth_start), \
            CofferClient(url, a_key, a_secret) as a, CofferClient(url, b_key, b_secret) as b, \
            contextlib.AsyncExitStack() as stack:
        # deposit addresses through the API (the wallet registry), one per user and chain
        alice_btc = (await a.deposit_address("BTC"))["address"]
        bob_usdt = await b.deposit_address("USDT")
        assert bob_usdt["token_contract"] == usdt
        assert (await b.deposit_address("ETH"))["address"] == bob_usdt["address"]

        # deposits on the chains: 0.5 BTC to alice (2 confirmations), 1000 USDT to bob (3)
        await in_thread(btc_chain.faucet, alice_btc, 50_000_000)
        await in_thread(btc_chain.mine, 1)
        mint_tx = await in_thread(eth_chain.mint_erc20, usdt, bob_usdt["address"], 1_000 * 10**6)
        await in_thread(eth_chain.mine, 1)
        await asyncio.sleep(1.5)  # the watchers have seen one confirmation each: nothing credited yet
        assert await a.balances() == [] and await b.balances() == []
        assert await a.deposits() == [] and await b.deposits() == []

        await in_thread(btc_chain.mine, 1)
        await in_thread(eth_chain.mine, 2)

        async def credited() -> bool:
            return bool(await a.deposits()) and bool(await b.deposits())

        assert await eventually(credited), "deposits were not credited after their confirmations"
        [a_dep] = await a.deposits()
        [b_dep] = await b.deposits()
        assert (a_dep["asset"], a_dep["amount"], a_dep["state"]) == ("BTC", "0.50000000", "credited")
        assert (b_dep["asset"], b_dep["amount"], b_dep["txid"].lower()) == ("USDT", "1000.000000", mint_tx.lower())
        assert await balances_of(db_url, alice) == {"BTC": (50_000_000, 0)}
        assert await balances_of(db_url, bob) == {"USDT": (1_000_000_000, 0)}

        ws_a = await ws_login(url, a, stack)
        ws_b = await ws_login(url, b, stack)

        # crossing orders over HTTP: alice's ask rests, bob's higher bid takes it at alice's price
        ask = await a.place_order(market="BTC-USDT", side="sell", price="30000.0", quantity="0.01")
        assert ask["status"] == "open"
        bid = await b.place_order(market="BTC-USDT", side="buy", price="30100.0", quantity="0.01")
        assert bid["status"] == "filled" and bid["filled_quote"] == "300.000000"

        # fills over the WebSocket, each user their own
        fill_a = await next_data(ws_a, lambda m: m["channel"] == "orders" and m["data"]["type"] == "fill")
        fill_b = await next_data(ws_b, lambda m: m["channel"] == "orders" and m["data"]["type"] == "fill")
        assert {k: fill_a["data"][k] for k in ("order_id", "side", "liquidity", "price", "quantity", "fee",
                                               "fee_asset")} == {
            "order_id": ask["id"], "side": "sell", "liquidity": "maker", "price": "30000.0",
            "quantity": "0.01000000", "fee": "0.300000", "fee_asset": "USDT"}
        assert {k: fill_b["data"][k] for k in ("order_id", "side", "liquidity", "quote_quantity", "fee",
                                               "fee_asset")} == {
            "order_id": bid["id"], "side": "buy", "liquidity": "taker", "quote_quantity": "300.000000",
            "fee": "0.00002000", "fee_asset": "BTC"}
        bal_b = await next_data(ws_b, lambda m: m["channel"] == "balances" and m["data"]["asset"] == "BTC")
        assert bal_b["data"]["available"] == "0.00998000"

        # balances and fees to the unit: 1,000,000 sat traded for 300,000,000 USDT units;
        # bob (taker, 20 bps) pays 2,000 sat, alice (maker, 10 bps) 300,000 units; bob's 1 USDT
        # of price improvement is released
        assert await balances_of(db_url, alice) == {"BTC": (49_000_000, 0), "USDT": (299_700_000, 0)}
        assert await balances_of(db_url, bob) == {"USDT": (700_000_000, 0), "BTC": (998_000, 0)}
        assert {x["asset"]: x["total"] for x in await a.balances()} == {"BTC": "0.49000000", "USDT": "299.700000"}

        # public market data shows the trade; the book is empty again
        async def public_trade() -> Any:
            trades = await a.trades("BTC-USDT")
            return trades if trades else None

        trades = await eventually(public_trade)
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [("30000.0", "0.01000", "buy")]
        candle = (await a.klines("BTC-USDT", "1m"))[-1]
        assert candle[1:] == ["30000.0", "30000.0", "30000.0", "30000.0", "0.01000", "300.000000"]
        depth = await a.depth("BTC-USDT")
        assert depth["bids"] == [] and depth["asks"] == [] and depth["update_id"] > 0

    # the ledger audit recomputes every balance from the records: clean
    audit = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "coffer", "ledger", "audit", "--database-url", db_url],
        capture_output=True, text=True, timeout=120)
    assert audit.returncode == 0, audit.stdout + audit.stderr
