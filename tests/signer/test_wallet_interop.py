"""The hot signer's exported account keys, read by the wallet's xpub-only derivation, give exactly the
addresses whose private keys the signer derives: deposits to wallet addresses are spendable."""

from __future__ import annotations

import pytest

from signer.eth_sign import address_of, derive_eth_key
from signer.hd import embit_network, root_key
from signer.hot import HotSigner
from signer.keystore import UnlockedSeed
from signer.policy import Policy, Rule
from tests.signer.helpers import MNEMONIC

wallet_derive = pytest.importorskip("wallet.derive")
wallet_config = pytest.importorskip("wallet.config")

SEED = UnlockedSeed(MNEMONIC)
POLICY = Policy([Rule("any", "BTC", max_single_chain_units=1)])


@pytest.mark.parametrize("network", ["mainnet", "regtest"])
def test_wallet_addresses_match_signer_keys(network: str) -> None:
    from embit import script

    signer = HotSigner(SEED, POLICY, network=network)
    root = root_key(SEED, network)
    net = embit_network(network)
    for export in signer.account_xpubs():
        addr_type = export.script_type if export.chain == "btc" else "eth"
        deriver = wallet_derive.open_account(export.extended_key, export.chain, network, addr_type)
        for change in (0, 1):
            for index in (0, 1, 7):
                path = f"{export.path}/{change}/{index}"
                if export.chain == "eth":
                    ours = address_of(derive_eth_key(root_key(SEED, "mainnet"), path))
                    assert deriver.address(index, change).lower() == ours.lower()
                else:
                    key = root.derive(path)
                    spk = script.p2wpkh(key) if addr_type == "p2wpkh" else script.p2tr(key)
                    assert deriver.address(index, change) == spk.address(net), (export.path, change, index)


def test_wallet_config_from_hot_exports() -> None:
    signer = HotSigner(SEED, POLICY, network="regtest")
    doc = wallet_config.config_from_exports(signer.account_xpubs(),
                                            usdt_contract="0xdAC17F958D2ee523a2206206994597C13D831ec7")
    assert set(doc["assets"]) == {"BTC", "ETH", "USDT"}
    assert doc["assets"]["BTC"]["xpub"].startswith("vpub")
