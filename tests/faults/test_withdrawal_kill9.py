"""kill -9 of the withdrawal processor at random points never sends a withdrawal twice.

`coffer withdrawals run` runs as a real subprocess and is SIGKILLed at random moments, over and
over, while the chain API answers slowly (so kills land between the commit of a signed
transaction and its broadcast, and during broadcasts); blocks are mined in between. Afterwards a
clean processor finishes: every withdrawal is paid exactly once on chain (one transaction to its
own destination, the amount to the satoshi), settled exactly once, and the audit is clean.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from coincurve import PrivateKey

from tests.withdrawals import env as E
from tests.withdrawals.cli import REPO_ROOT
from wallet.addresses import p2wpkh_address

N_WITHDRAWALS = 6


def _start(cenv: dict[str, str]) -> subprocess.Popen[bytes]:
    full = dict(os.environ)
    full.update(cenv)
    full["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "coffer", "withdrawals", "run"], env=full, cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.slow
def test_kill9_of_processor_never_pays_twice(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("COFFER_TEST_SEED", "0")) or random.randrange(1 << 30))
    env = E.make_env(tmp_path)
    dests = [p2wpkh_address(PrivateKey.from_int(1000 + i).public_key.format(), "regtest")
             for i in range(N_WITHDRAWALS)]

    async def setup() -> list[Any]:
        conn = await asyncpg.connect(db_url)
        try:
            await E.seed_assets(conn)
            address = await E.deposit_address(conn, env, 3, "BTC")
            for _ in range(3):
                txid = btc_chain.faucet(address, 4_000_000)
                btc_chain.mine(1)
                await E.credit(conn, user_id=3, asset="BTC", amount=4_000_000, txid=txid)
            btc_chain.mine(1)
        finally:
            await conn.close()
        out = []
        for i, dest in enumerate(dests):
            out.append(await E.request_withdrawal(db_url, redis_url, user_id=3, asset="BTC",
                                                  amount=f"0.00{i + 1}5", address=dest))
        return out

    withdrawals = asyncio.run(setup())
    cenv = {"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ESPLORA_URL": btc_chain.url,
            "COFFER_WITHDRAWALS_POLL_S": "0.05", **env.signer_env()}

    kills = 0
    for round_no in range(8):
        btc_chain.faults(40, status=None, delay_ms=rng.choice((0, 20, 60)))  # slow answers widen the windows
        proc = _start(cenv)
        time.sleep(rng.uniform(0.8, 2.5))  # the interpreter needs ~0.7 s before its first pass
        _kill9(proc)
        kills += 1
        snap = asyncio.run(_fetch(db_url, "SELECT state, broadcasts FROM wd_txs ORDER BY id"))
        print(f"round {round_no}: {[(t['state'], t['broadcasts']) for t in snap]}")
        if round_no % 3 == 2:
            btc_chain.mine(1)
    btc_chain.faults(0, status=None)

    proc = _start(cenv)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = asyncio.run(_fetch(db_url, "SELECT state FROM withdrawals ORDER BY id"))
            if all(r["state"] == "settled" for r in rows):
                break
            btc_chain.mine(1)
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0

    rows = asyncio.run(_fetch(db_url, "SELECT id, state, amount, fee, txid FROM withdrawals ORDER BY id"))
    assert [r["state"] for r in rows] == ["settled"] * N_WITHDRAWALS, f"after {kills} kills"
    for w, dest in zip(rows, dests, strict=True):
        history = btc_chain.get(f"/address/{dest}/txs").json()
        assert len(history) == 1, f"{dest} was paid by {len(history)} transactions"
        paid = [o["value"] for o in history[0]["vout"] if o.get("scriptpubkey_address") == dest]
        assert paid == [w["amount"] - w["fee"]]
        assert history[0]["txid"] == w["txid"] and history[0]["status"]["confirmed"]
    assert btc_chain.get("/mempool/txids").json() == []
    settles = asyncio.run(_fetch(db_url, "SELECT count(*) AS n FROM balance_journal WHERE kind = 'withdraw_settle'"))
    assert settles[0]["n"] == N_WITHDRAWALS
    confirmed = asyncio.run(_fetch(db_url, "SELECT withdrawal_id FROM wd_txs WHERE state = 'confirmed'"))
    assert sorted(r["withdrawal_id"] for r in confirmed) == [w["id"] for w in withdrawals]
    assert asyncio.run(_audit(db_url)) == []


async def _fetch(db_url: str, sql: str) -> list[Any]:
    conn = await asyncpg.connect(db_url)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def _audit(db_url: str) -> list[str]:
    conn = await asyncpg.connect(db_url)
    try:
        return await E.audit_clean(conn)
    finally:
        await conn.close()


@pytest.mark.slow
def test_kill9_eth_nonces_never_reused_or_skipped(db_url: str, redis_url: str, eth_chain: Any,
                                                  tmp_path: Path) -> None:
    """The same on Ethereum: every withdrawal paid once, and the hot sender's on-chain nonces are
    exactly the nonces of our transactions, contiguous (none reused, none skipped)."""
    rng = random.Random(int(os.environ.get("COFFER_TEST_SEED", "0")) or random.randrange(1 << 30))
    env = E.make_env(tmp_path, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    dests = ["0x" + f"{0xa0 + i:02x}" * 20 for i in range(N_WITHDRAWALS)]

    async def setup() -> str:
        from ledger.withdrawals_proc.hotkeys import HotKeys

        conn = await asyncpg.connect(db_url)
        try:
            await E.seed_assets(conn)
            hot = HotKeys.from_signer(env.signer).eth_hot_address
            funding = eth_chain.fund(hot, 5 * 10**18)
            await conn.execute("INSERT INTO users (id) VALUES (31) ON CONFLICT DO NOTHING")
            await E.credit(conn, user_id=31, asset="ETH", amount=5 * 10**9, txid=funding)
        finally:
            await conn.close()
        for i, dest in enumerate(dests):
            await E.request_withdrawal(db_url, redis_url, user_id=31, asset="ETH", amount=f"0.0{i + 1}", address=dest)
        return hot

    hot = asyncio.run(setup())
    start_nonce = int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16)
    cenv = {"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ETH_RPC_URL": eth_chain.url,
            "COFFER_WITHDRAWALS_POLL_S": "0.05", **env.signer_env()}
    for _ in range(6):
        eth_chain.faults(30, status=None, delay_ms=rng.choice((0, 30, 80)))
        proc = _start(cenv)
        time.sleep(rng.uniform(0.8, 2.2))
        _kill9(proc)
        snap = asyncio.run(_fetch(db_url, "SELECT state, nonce FROM wd_txs WHERE chain = 'eth' ORDER BY id"))
        print(f"eth after kill: {[(t['state'], t['nonce']) for t in snap]}")
    eth_chain.faults(0, status=None)
    proc = _start(cenv)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = asyncio.run(_fetch(db_url, "SELECT state FROM withdrawals WHERE asset = 'ETH' ORDER BY id"))
            if all(r["state"] == "settled" for r in rows):
                break
            eth_chain.mine(1)
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    rows = asyncio.run(_fetch(db_url, "SELECT id, state, amount, fee, txid FROM withdrawals WHERE asset = 'ETH' "
                                      "ORDER BY id"))
    assert [r["state"] for r in rows] == ["settled"] * N_WITHDRAWALS
    for w, dest in zip(rows, dests, strict=True):
        assert int(eth_chain.rpc("eth_getBalance", dest, "latest"), 16) == (w["amount"] - w["fee"]) * 10**9
    txs = asyncio.run(_fetch(db_url, "SELECT nonce, txid, state FROM wd_txs WHERE chain = 'eth' ORDER BY nonce"))
    confirmed = [t for t in txs if t["state"] == "confirmed"]
    assert sorted(int(t["nonce"]) for t in confirmed) == list(range(start_nonce, start_nonce + N_WITHDRAWALS))
    assert int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16) == start_nonce + N_WITHDRAWALS
    assert asyncio.run(_audit(db_url)) == []
