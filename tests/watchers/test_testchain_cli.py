"""`coffer chain eth|btc` as processes with options: periodic block production (--block-time),
manual mining on Ethereum, and one-line user errors for bad options."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from eth_account import Account

from tests.chain_fixtures import REPO_ROOT, BtcChain, EthChain, chain_process


def _wait_until(predicate: object, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_eth_block_time_mines_pending_transactions() -> None:
    with chain_process("eth", "--manual-mine", "--block-time", "0.2", "--finalized-depth", "3",
                       "--max-log-range", "5") as process:
        chain = EthChain(process)
        start = chain.block_number()
        assert _wait_until(lambda: chain.block_number() >= start + 2)
        txid = chain.fund(Account.create().address, 10**15)
        assert _wait_until(lambda: chain.rpc("eth_getTransactionReceipt", txid) is not None)
        finalized = int(chain.rpc("eth_getBlockByNumber", "finalized", False)["number"], 16)
        assert chain.block_number() - finalized >= 3  # blocks keep landing, so only a lower bound
        assert chain.rpc("eth_getLogs", {"fromBlock": "0x1", "toBlock": "0x5"}) == []
        with pytest.raises(RuntimeError, match="limited to a 5 block range"):
            chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "0x5"})


def test_btc_block_time_advances_the_tip_and_mines_the_mempool() -> None:
    with chain_process("btc", "--block-time", "0.2", "--initial-blocks", "110") as process:
        chain = BtcChain(process)
        assert chain.tip_height() >= 110
        info = chain.get("/regtest/info").json()
        txid = chain.faucet(info["faucet_address"], 50_000)
        assert _wait_until(lambda: chain.get(f"/tx/{txid}/status").json()["confirmed"] is True)
        assert httpx.get(process.url + "/blocks/tip/height", timeout=10).status_code == 200


def test_bad_options_are_one_line_errors() -> None:
    for args in (["btc", "--network", "mainnet"], ["eth", "--safe-depth", "5", "--finalized-depth", "1"],
                 ["eth", "--port", "70000"]):
        result = subprocess.run([sys.executable, "-m", "coffer", "chain", *args], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("coffer: error: ") and result.stderr.count("\n") == 1
        assert result.stdout == ""
