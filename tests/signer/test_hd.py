"""Account export: BIP84/BIP86 account keys and first addresses, Ethereum path, descriptors, SLIP-132."""

from __future__ import annotations

import pytest

from signer.errors import DerivationError
from signer.hd import account_export, parse_path, root_key
from signer.keystore import UnlockedSeed
from tests.signer.helpers import MNEMONIC

SEED = UnlockedSeed(MNEMONIC)


def test_bip84_vector_zpub_and_first_address() -> None:
    # BIP84 test vectors (bip-0084.mediawiki): account 0 zpub and m/84'/0'/0'/0/0 address.
    from embit import script

    export = account_export(SEED, "btc", "mainnet", 0, "p2wpkh")
    assert export.extended_key == (
        "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs"
    )
    assert export.origin == "[73c5da0a/84h/0h/0h]"
    assert export.descriptor.startswith("wpkh([73c5da0a/84h/0h/0h]xpub") and "/<0;1>/*)#" in export.descriptor
    key = root_key(SEED, "mainnet").derive(parse_path("m/84'/0'/0'/0/0"))
    from signer.hd import embit_network

    assert script.p2wpkh(key).address(embit_network("mainnet")) == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"


def test_bip86_vector_xpub() -> None:
    # BIP86 test vectors (bip-0086.mediawiki): account 0 xpub for the same mnemonic.
    export = account_export(SEED, "btc", "mainnet", 0, "p2tr")
    assert export.extended_key == (
        "xpub6BgBgsespWvERF3LHQu6CnqdvfEvtMcQjYrcRzx53QJjSxarj2afYWcLteoGVky7D3UKDP9QyrLprQ3VCECoY49yfdDEHGCtMMj92pReUsQ"
    )
    assert export.descriptor.startswith("tr([73c5da0a/86h/0h/0h]xpub")


def test_regtest_uses_vpub_and_tpub_descriptor_that_bdk_accepts() -> None:
    import bdkpython as bdk

    export = account_export(SEED, "btc", "regtest", 0, "p2wpkh")
    assert export.extended_key.startswith("vpub")
    assert export.standard_xpub.startswith("tpub")
    assert export.path == "m/84h/1h/0h"
    receive = export.descriptor.split("#")[0].replace("<0;1>", "0")
    desc = bdk.Descriptor(receive, bdk.NetworkKind.TEST)
    wallet = bdk.Wallet.create_single(desc, bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    from embit import script

    from signer.hd import embit_network

    ours = script.p2wpkh(root_key(SEED, "regtest").derive("m/84h/1h/0h/0/3")).address(embit_network("regtest"))
    assert str(wallet.peek_address(bdk.KeychainKind.EXTERNAL, 3).address) == ours


def test_ethereum_account_address() -> None:
    from signer.eth_sign import address_of, derive_eth_key

    export = account_export(SEED, "eth", "mainnet", 0, None)
    assert export.extended_key.startswith("xpub") and export.origin == "[73c5da0a/44h/60h/0h]"
    key = derive_eth_key(root_key(SEED, "mainnet"), "m/44'/60'/0'/0/0")
    # Widely published first address of the BIP39 "abandon ... about" mnemonic.
    assert address_of(key) == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


@pytest.mark.parametrize(
    ("chain", "network", "account", "stype"),
    [
        ("btc", "mainnet", -1, "p2wpkh"),
        ("btc", "simnet", 0, "p2wpkh"),
        ("btc", "mainnet", 0, "p2sh"),
        ("ltc", "mainnet", 0, None),
    ],
)
def test_bad_requests(chain: str, network: str, account: int, stype: str | None) -> None:
    with pytest.raises(DerivationError):
        account_export(SEED, chain, network, account, stype)


def test_embit_uses_libsecp256k1_not_pure_python() -> None:
    import embit.util.secp256k1 as backend

    assert backend.ecdsa_sign.__module__ == "embit.util.ctypes_secp256k1"
