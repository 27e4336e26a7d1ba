"""Property test: our xpub-only derivation agrees with bdkpython's descriptor derivation
(an independent implementation, rust-bitcoin + miniscript) on 1,000 random indices per case."""

from __future__ import annotations

import random

import bdkpython as bdk
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.derive import MAX_INDEX, open_account

MNEMONIC = "abandon " * 11 + "about"
SEED = mnemonic_to_seed(MNEMONIC)
MAIN_ACCOUNT = ExtendedKey.from_seed(SEED, "mainnet").derive("m/84'/0'/0'").neuter()
TEST_ACCOUNT = ExtendedKey.from_seed(SEED, "testnet").derive("m/86'/1'/0'").neuter()
BDK_NETWORK = {"mainnet": bdk.Network.BITCOIN, "testnet": bdk.Network.TESTNET, "regtest": bdk.Network.REGTEST}


def _bdk_descriptor(key: ExtendedKey, addr_type: str, change: int) -> bdk.Descriptor:
    kind = bdk.NetworkKind.MAIN if key.version.mainnet else bdk.NetworkKind.TEST
    wrapper = "wpkh" if addr_type == "p2wpkh" else "tr"
    return bdk.Descriptor(f"{wrapper}({key.serialize()}/{change}/*)", kind)


_MAIN_WPKH = _bdk_descriptor(MAIN_ACCOUNT, "p2wpkh", 0)
_OURS_MAIN_WPKH = open_account(MAIN_ACCOUNT.serialize(), "btc", "mainnet", "p2wpkh")


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(st.integers(min_value=0, max_value=MAX_INDEX))
def test_p2wpkh_mainnet_matches_bdk(index: int) -> None:
    expected = str(_MAIN_WPKH.derive_address(index, bdk.Network.BITCOIN))
    assert _OURS_MAIN_WPKH.address(index) == expected


@pytest.mark.parametrize(
    ("key", "network", "addr_type", "change"),
    [
        (TEST_ACCOUNT, "regtest", "p2tr", 0),
        (TEST_ACCOUNT, "testnet", "p2wpkh", 1),
        (MAIN_ACCOUNT, "mainnet", "p2tr", 0),
    ],
    ids=["regtest-p2tr-receive", "testnet-p2wpkh-change", "mainnet-p2tr-receive"],
)
def test_random_indices_match_bdk(key: ExtendedKey, network: str, addr_type: str, change: int) -> None:
    rng = random.Random(f"{network}-{addr_type}-{change}")
    indices = [rng.randrange(0, MAX_INDEX + 1) for _ in range(1000)] + [0, 1, MAX_INDEX]
    descriptor = _bdk_descriptor(key, addr_type, change)
    ours = open_account(key.serialize(), "btc", network, addr_type)
    for index in indices:
        assert ours.address(index, change) == str(descriptor.derive_address(index, BDK_NETWORK[network])), index
