"""`coffer api deposits` as operators run it: a real uvicorn process on a free port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from coffer.localservices import free_port
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed

TOKEN = "serve-test-token-abcdef012345"


async def _add_user(db_url: str, user_id: int) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
    finally:
        await conn.close()


def test_serve_answers_over_http(db_url: str, tmp_path: Path) -> None:
    asyncio.run(_add_user(db_url, 41))
    root = ExtendedKey.from_seed(mnemonic_to_seed("abandon " * 11 + "about"), "testnet")
    config = tmp_path / "wallet.json"
    config.write_text(json.dumps({"assets": {
        "BTC": {"chain": "btc", "network": "regtest", "xpub": root.derive("m/84'/1'/0'").neuter().serialize()},
    }}))
    port = free_port()
    env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_SERVICE_TOKEN": TOKEN,
           "COFFER_WALLET_CONFIG": str(config), "COFFER_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "coffer", "api", "deposits", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = http.post("/v1/deposit-addresses", json={"user_id": 41, "asset": "BTC"},
                                         headers={"Authorization": f"Bearer {TOKEN}"})
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, "deposit API exited at start"
                    assert time.monotonic() < deadline, "deposit API did not start"
                    time.sleep(0.1)
            assert response.status_code == 201
            assert response.json()["address"].startswith("bcrt1q")
            assert response.json()["derivation_path"] == "m/84'/1'/0'/0/0"
            assert http.get("/v1/deposit-addresses?user_id=41").status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_serve_without_config_is_one_line_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env["COFFER_DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-m", "coffer", "api", "deposits"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "COFFER_WALLET_CONFIG" in result.stderr
