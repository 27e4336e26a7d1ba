"""wallet.config: the COFFER_WALLET_CONFIG file, its validation, and building it from signer exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.config import config_from_exports, load_config, parse_config
from wallet.errors import ConfigError, UnknownAssetError

SEED = mnemonic_to_seed("abandon " * 11 + "about")
TEST_ROOT = ExtendedKey.from_seed(SEED, "testnet")
VPUB = TEST_ROOT.derive("m/84'/1'/0'").neuter().with_version("vpub").serialize()
ETH_XPUB = ExtendedKey.from_seed(SEED, "mainnet").derive("m/44'/60'/0'").neuter().serialize()
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def _doc(**asset: Any) -> dict[str, Any]:
    return {"assets": {"X": asset}}


def test_valid_config_and_shared_eth_account(tmp_path: Path) -> None:
    path = tmp_path / "wallet.json"
    path.write_text(json.dumps({"gap_limit": 5, "assets": {
        "BTC": {"chain": "btc", "network": "regtest", "xpub": VPUB},
        "ETH": {"chain": "eth", "network": "regtest", "xpub": ETH_XPUB},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": ETH_XPUB, "token": USDT},
    }}))
    config = load_config(environ={"COFFER_WALLET_CONFIG": str(path)})
    assert config.gap_limit == 5
    assert config.asset("USDT").token == USDT.lower()
    assert config.asset("ETH").account == config.asset("USDT").account
    assert config.asset("BTC").account != config.asset("ETH").account
    assert config.assets_of_account(config.asset("ETH").account) == ["ETH", "USDT"]
    assert config.asset("BTC").addr_type == "p2wpkh"
    assert VPUB not in repr(config.asset("BTC"))
    with pytest.raises(UnknownAssetError, match="configured: BTC, ETH, USDT"):
        config.asset("DOGE")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "JSON object"),
        ({"assets": {}}, "non-empty"),
        ({"assets": {"X": {}}, "gap_limit": 0}, "gap_limit"),
        ({"assets": {"X": {}}, "colour": 1}, "unknown field"),
        (_doc(chain="btc", network="regtest"), "'xpub' is required"),
        (_doc(chain="btc", network="mainnet", xpub=VPUB), "not mainnet"),
        (_doc(chain="btc", network="regtest", xpub=VPUB, type="p2tr"), "P2WPKH"),
        (_doc(chain="btc", network="regtest", xpub=VPUB, token=USDT), "only for Ethereum"),
        (_doc(chain="eth", network="regtest", xpub=ETH_XPUB, token="0x1234"), "token contract"),
        (_doc(chain="btc", network="regtest", xpub=TEST_ROOT.derive("m/84'/1'/0'").serialize()), "private"),
        (_doc(chain="btc", network="regtest", xpub=VPUB[:-2] + "zz"), "invalid extended public key"),
        (_doc(chain="doge", network="regtest", xpub=VPUB), "unknown chain"),
        (_doc(chain="btc", network="regtest", xpub=VPUB, wat=1), "unknown field"),
    ],
)
def test_bad_configs(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_missing_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COFFER_WALLET_CONFIG is not set"):
        load_config(environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)


def test_config_from_signer_exports() -> None:
    from signer.hd import account_export
    from signer.keystore import UnlockedSeed

    seed = UnlockedSeed("abandon " * 11 + "about")
    exports = [account_export(seed, "btc", "regtest", 0, "p2wpkh"), account_export(seed, "eth", "regtest", 0, None)]
    doc = config_from_exports(exports, usdt_contract=USDT)
    config = parse_config(doc)
    assert set(config.assets) == {"BTC", "ETH", "USDT"}
    assert config.asset("BTC").deriver.derivation_path(0) == "m/84'/1'/0'/0/0"
    expected = TEST_ROOT.derive("m/84'/1'/0'/0/0").public_key
    assert config.asset("BTC").deriver.public_key(0) == expected

