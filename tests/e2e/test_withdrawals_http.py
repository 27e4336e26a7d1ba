"""The whole withdrawal path from a signed HTTP request: POST /api/v1/withdrawals -> intake stream ->
ledger hold -> `coffer withdrawals run` (a real subprocess) -> regtest chain -> confirmations ->
settled; GET /api/v1/withdrawals shows the txid and `settled`; balances over HTTP agree."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from api.client import CofferClient
from tests.api.server import config_for, intake_consumers, new_user, running_api, seed_markets
from tests.withdrawals import env as E
from tests.withdrawals.cli import REPO_ROOT

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@pytest.mark.asyncio
async def test_http_request_to_settled_on_chain(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path) -> None:
    import asyncpg

    (tmp_path / "keys").mkdir()
    env = E.make_env(tmp_path / "keys")
    await seed_markets(db_url)
    user_id, key_id, secret = await new_user(db_url, tmp_path)
    conn = await asyncpg.connect(db_url)
    try:
        address = await E.deposit_address(conn, env, user_id, "BTC")
        funding = btc_chain.faucet(address, 1_000_000)
        btc_chain.mine(2)
        await E.credit(conn, user_id=user_id, asset="BTC", amount=1_000_000, txid=funding)
    finally:
        await conn.close()
    full = dict(os.environ)
    full.update({"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ESPLORA_URL": btc_chain.url,
                 "COFFER_WITHDRAWALS_POLL_S": "0.1", "PYTHONPATH": str(REPO_ROOT), **env.signer_env()})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "coffer", "withdrawals", "run", env=full,
                                                cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        async with intake_consumers(db_url, redis_url, 2), \
                running_api(config_for(db_url, redis_url, tmp_path)) as url, \
                CofferClient(url, key_id, secret) as client:
            created = await client.call("POST", "/api/v1/withdrawals",
                                        json={"asset": "BTC", "address": DEST, "amount": "0.003"})
            assert created["status"] == "held" and created["held"] == "0.00310000"
            wid = created["id"]
            view: dict[str, Any] = {}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                (view,) = [w for w in await client.call("GET", "/api/v1/withdrawals") if w["id"] == wid]
                if view["status"] == "settled":
                    break
                if view["status"] == "broadcast":
                    btc_chain.mine(1)
                await asyncio.sleep(0.2)
            assert view["status"] == "settled" and view["txid"], view
            onchain = btc_chain.get(f"/tx/{view['txid']}").json()
            assert [o["value"] for o in onchain["vout"] if o.get("scriptpubkey_address") == DEST] == [300_000]
            balances = {b["asset"]: b for b in await client.call("GET", "/api/v1/balances")}
            assert balances["BTC"]["available"] == "0.00690000" and balances["BTC"]["frozen"] == "0.00000000"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"withdrawals: processor running" in out
