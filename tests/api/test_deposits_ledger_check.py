"""The deposit API refuses to start when its wallet config contradicts the ledger's assets."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from api.deposits_app import DepositApiConfig, create_app
from coffer.settings import Secret
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import ledger_mismatches, parse_config
from wallet.errors import ConfigError

SEED = mnemonic_to_seed("abandon " * 11 + "about")
TPUB = ExtendedKey.from_seed(SEED, "testnet").derive("m/84'/1'/0'").neuter().serialize()
XPUB = ExtendedKey.from_seed(SEED, "mainnet").derive("m/84'/0'/0'").neuter().serialize()
ETH = ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize()
USDT = "0x" + "ab" * 20


async def _seed(db_url: str) -> None:
    from ledger.demo import seed_demo

    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract=USDT)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_mismatch_refuses_start_and_match_serves(db_url: str) -> None:
    await _seed(db_url)
    wrong = parse_config({"assets": {"BTC": {"chain": "btc", "network": "mainnet", "xpub": XPUB}}})
    app = create_app(DepositApiConfig(db_url, Secret("t0ken-for-tests"), wrong))
    with pytest.raises(ConfigError, match="BTC: wallet config says btc/mainnet, ledger says btc/regtest"):
        async with app.router.lifespan_context(app):
            pass
    right = parse_config({"assets": {
        "BTC": {"chain": "btc", "network": "regtest", "xpub": TPUB},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": ETH, "token": USDT},
    }})
    app = create_app(DepositApiConfig(db_url, Secret("t0ken-for-tests"), right))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://d") as http:
        r = await http.get("/v1/deposit-addresses/bcrt1qnothing", headers={"Authorization": "Bearer t0ken-for-tests"})
        assert r.status_code == 404


def test_ledger_mismatches_pure() -> None:
    config = parse_config({"assets": {
        "BTC": {"chain": "btc", "network": "regtest", "xpub": TPUB},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": ETH, "token": USDT},
        "NEW": {"chain": "eth", "network": "regtest", "xpub": ETH},
    }})
    rows = [
        {"code": "BTC", "chain": "btc", "network": "regtest", "token_contract": None},
        {"code": "USDT", "chain": "eth", "network": "regtest", "token_contract": "0x" + "cd" * 20},
    ]
    errors, warnings = ledger_mismatches(config, rows)
    assert errors == [f"asset USDT: token contract {USDT} in the wallet config, 0x{'cd' * 20} in the ledger"]
    assert warnings == ["asset NEW is configured for deposit addresses but not in the ledger's assets"]
