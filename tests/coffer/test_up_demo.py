"""`coffer up` in demo mode, as a newcomer runs it: local chains, the demo user's deposits
credited through the watchers, an order placed over HTTP, depth served, a BTC withdrawal
hot-signed, broadcast, confirmed and settled, then Ctrl-C leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from api.client import CofferClient
from coffer.localservices import free_port
from tests.coffer.test_up import _alive, _descendants, _read_until_ready


@pytest.mark.slow
def test_demo_stack_credits_deposits_and_trades_then_stops_cleanly(data_dir: Path) -> None:
    data = data_dir
    trading_port, deposit_port = free_port(), free_port()
    env = {**os.environ, "COFFER_TRADING_API_PORT": str(trading_port), "COFFER_DEPOSIT_API_PORT": str(deposit_port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coffer", "up", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        out = _read_until_ready(proc, timeout_s=120)
        for name in ("chain-eth", "chain-btc", "ledger-intake", "ledger-settlement", "matcher", "api-trading",
                     "watcher-btc", "demo user"):
            assert name in out, out
        creds = json.loads((data / "demo-user.json").read_text())
        assert creds["secret"] in out  # printed once for the newcomer
        children = _descendants(proc.pid)
        assert len(children) >= 8

        async def scenario() -> tuple[dict[str, str], dict[str, object], dict[str, object], dict[str, object]]:
            async with CofferClient(f"http://127.0.0.1:{trading_port}", creds["key_id"], creds["secret"]) as client:
                deadline = time.monotonic() + 120
                totals: dict[str, str] = {}
                while time.monotonic() < deadline:
                    totals = {b["asset"]: b["total"] for b in await client.balances()}
                    if all(totals.get(a, "0").strip("0.") for a in ("BTC", "ETH", "USDT")):
                        break
                    await asyncio.sleep(1)
                order = await client.place_order(market="BTC-USDT", side="sell", type="limit",
                                                 price="31000", quantity="0.01")
                depth: dict[str, object] = {}
                for _ in range(50):
                    depth = await client.depth("BTC-USDT")
                    if depth["asks"]:
                        break
                    await asyncio.sleep(0.2)
                await client.call("POST", "/api/v1/withdrawals", json={
                    "asset": "BTC", "address": "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "amount": "0.01"})
                withdrawal: dict[str, object] = {}
                for _ in range(120):
                    (withdrawal,) = await client.call("GET", "/api/v1/withdrawals")
                    if withdrawal["status"] in ("settled", "released"):
                        break
                    await asyncio.sleep(0.5)
                return totals, order, depth, withdrawal

        totals, order, depth, withdrawal = asyncio.run(scenario())
        # The faucet paid 0.5 BTC, 5 ETH and 50,000 USDT to the demo user's deposit addresses.
        assert totals == {"BTC": "0.50000000", "ETH": "5.000000000", "USDT": "50000.000000"}, totals
        assert order["status"] == "open"
        assert depth["asks"] == [["31000.0", "0.01000"]], depth
        # Within the demo hot policy: signed by the hot signer, confirmed on the regtest chain.
        assert withdrawal["status"] == "settled", withdrawal
        assert withdrawal["held"] == "0.01010000"
        assert isinstance(withdrawal["txid"], str) and len(withdrawal["txid"]) == 64
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, rest
    time.sleep(0.3)
    left = [pid for pid in children if _alive(pid)]
    assert left == [], f"left behind: {left}"
