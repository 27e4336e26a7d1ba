"""BIP84, BIP86 (+ BIP341 key-path outputs) and Ethereum m/44'/60'/0'/0/0 vectors, derived
from account xpubs only (tests/vectors/bip84_vectors.json, bip86_vectors.json,
bip86_bip341-wallet-test-vectors.json, eth_bip44_vectors.json)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.wallet.vectors import load
from wallet.addresses import p2tr_address, taproot_output_key
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.derive import open_account

BIP84 = load("bip84_vectors.json")
BIP86 = load("bip86_vectors.json")
BIP341 = load("bip86_bip341-wallet-test-vectors.json")
ETH = load("eth_bip44_vectors.json")


def test_bip84_from_mnemonic_and_zpub() -> None:
    seed = mnemonic_to_seed(BIP84["mnemonic"], BIP84["passphrase"])
    root = ExtendedKey.from_seed(seed, "mainnet", script_type="p2wpkh")
    assert root.serialize() == BIP84["rootnode"]
    account = root.derive(BIP84["account_path"])
    assert account.serialize() == BIP84["account_xprv"]
    zpub = account.neuter().serialize()
    assert zpub.startswith("zpub")
    deriver = open_account(zpub, "btc", "mainnet")  # xpub-only from here on
    for entry in BIP84["addresses"]:
        assert deriver.public_key(entry["index"], entry["change"]).hex() == entry["pubkey"]
        assert deriver.address(entry["index"], entry["change"]) == entry["address"]
        assert deriver.derivation_path(entry["index"], entry["change"]) == entry["path"]
    # The same node as a plain xpub gives the same P2WPKH addresses.
    as_xpub = account.neuter().with_version("xpub").serialize()
    assert open_account(as_xpub, "btc", "mainnet", "p2wpkh").address(0) == BIP84["addresses"][0]["address"]


def test_bip86_from_mnemonic_and_xpub() -> None:
    seed = mnemonic_to_seed(BIP86["mnemonic"], BIP86["passphrase"])
    root = ExtendedKey.from_seed(seed, "mainnet")
    assert root.serialize() == BIP86["rootpriv"]
    assert root.neuter().serialize() == BIP86["rootpub"]
    account = root.derive(BIP86["account_path"])
    assert account.serialize() == BIP86["account_xprv"]
    assert account.neuter().serialize() == BIP86["account_xpub"]
    deriver = open_account(BIP86["account_xpub"], "btc", "mainnet", "p2tr")
    for entry in BIP86["addresses"]:
        node = root.derive(entry["path"])
        assert node.serialize() == entry["xprv"] and node.neuter().serialize() == entry["xpub"]
        internal = deriver.public_key(entry["index"], entry["change"])
        assert internal[1:].hex() == entry["internal_key"]
        assert taproot_output_key(internal).hex() == entry["output_key"]
        assert deriver.address(entry["index"], entry["change"]) == entry["address"]
        assert deriver.derivation_path(entry["index"], entry["change"]) == entry["path"]


KEYPATH = [e for e in BIP341["scriptPubKey"] if e["given"]["scriptTree"] is None]


@pytest.mark.parametrize("entry", KEYPATH)
def test_bip341_keypath_outputs(entry: dict[str, Any]) -> None:
    xonly = bytes.fromhex(entry["given"]["internalPubkey"])
    # BIP86 lifts the x-only internal key to even y, so either prefix gives the same output.
    for prefix in (b"\x02", b"\x03"):
        assert taproot_output_key(prefix + xonly).hex() == entry["intermediary"]["tweakedPubkey"]
        assert p2tr_address(prefix + xonly, "mainnet") == entry["expected"]["bip350Address"]


def test_eth_abandon_about() -> None:
    seed = mnemonic_to_seed(ETH["mnemonic"], ETH["passphrase"])
    account = ExtendedKey.from_seed(seed, "mainnet").derive(ETH["account_path"]).neuter()
    deriver = open_account(account.serialize(), "eth", "mainnet")
    for entry in ETH["addresses"]:
        assert deriver.address(entry["index"], entry["change"]) == entry["address"]
        assert deriver.derivation_path(entry["index"], entry["change"]) == entry["path"]


def test_eth_cross_check_with_eth_account() -> None:
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    seed = mnemonic_to_seed(ETH["mnemonic"], "")
    account = ExtendedKey.from_seed(seed, "mainnet").derive("m/44'/60'/0'").neuter()
    deriver = open_account(account.serialize(), "eth", "testnet")
    for index in (0, 1, 7, 1000):
        expected = Account.from_mnemonic(ETH["mnemonic"], account_path=f"m/44'/60'/0'/0/{index}").address
        assert deriver.address(index) == expected


def test_standard_account_paths() -> None:
    from wallet.derive import standard_account_path
    from wallet.errors import WalletError

    assert standard_account_path("btc", "mainnet", "p2wpkh") == BIP84["account_path"]
    assert standard_account_path("btc", "mainnet", "p2tr") == BIP86["account_path"]
    assert standard_account_path("eth", "regtest", "eth") == ETH["account_path"]
    assert standard_account_path("btc", "regtest", "p2tr", 5) == "m/86'/1'/5'"
    with pytest.raises(WalletError, match="does not fit"):
        standard_account_path("eth", "mainnet", "p2wpkh")
