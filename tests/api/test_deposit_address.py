"""GET /api/v1/deposit-address through the wallet registry: stable per user, one Ethereum
address for ETH and its tokens, different users different addresses, bad asset named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from api.client import ClientError, CofferClient
from tests.api.server import config_for, new_user, running_api, seed_markets
from wallet.addresses import validate_address
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import parse_config

SEED = mnemonic_to_seed("abandon " * 11 + "about")
WALLET = parse_config({"assets": {
    "BTC": {"chain": "btc", "network": "regtest",
            "xpub": ExtendedKey.from_seed(SEED, "testnet").derive("m/84'/1'/0'").neuter().serialize()},
    "ETH": {"chain": "eth", "network": "regtest",
            "xpub": ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize()},
    "USDT": {"chain": "eth", "network": "regtest",
             "xpub": ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize(),
             "token": "0x" + "11" * 20},
}})


@pytest.mark.asyncio
async def test_deposit_addresses_per_user(db_url: str, redis_url: str, tmp_path: Path) -> None:
    await seed_markets(db_url)
    _, a_key, a_secret = await new_user(db_url, tmp_path)
    _, b_key, b_secret = await new_user(db_url, tmp_path)
    config = replace(config_for(db_url, redis_url, tmp_path), wallet=WALLET)
    async with running_api(config) as url, CofferClient(url, a_key, a_secret) as a, \
            CofferClient(url, b_key, b_secret) as b:
        btc = await a.deposit_address("BTC")
        assert btc["address"].startswith("bcrt1q")
        assert validate_address(btc["address"], "btc", "regtest") == btc["address"]
        assert await a.deposit_address("btc") == btc
        eth = await a.deposit_address("ETH")
        usdt = await a.deposit_address("USDT")
        assert eth["address"] == usdt["address"] and usdt["token_contract"] == "0x" + "11" * 20
        assert (await b.deposit_address("BTC"))["address"] != btc["address"]
        for asset, words in (("DOGE", "not configured"), ("", "required")):
            with pytest.raises(ClientError) as info:
                await a.deposit_address(asset)
            assert info.value.status_code == 400 and info.value.body["field"] == "asset"
            assert words in info.value.body["reason"]
    async with running_api(config_for(db_url, redis_url, tmp_path)) as url, CofferClient(url, a_key, a_secret) as a:
        with pytest.raises(ClientError) as info:
            await a.deposit_address("BTC")
        assert info.value.status_code == 503 and "COFFER_WALLET_CONFIG" in info.value.body["reason"]
