"""wallet.addresses.validate_address: checksums, networks, witness versions, EIP-55."""

from __future__ import annotations

import pytest

from wallet.addresses import p2tr_address, p2wpkh_address, to_checksum_address, validate_address
from wallet.bech32 import decode_segwit, encode_segwit
from wallet.errors import InvalidAddressError

# BIP173 example: P2WPKH of the generator point's compressed key (bip-0173.mediawiki, "Examples").
G_COMPRESSED = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
BIP173_MAINNET = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
BIP173_TESTNET = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
# EIP-55 examples (eip-55.md, "Test Cases").
EIP55 = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


def test_bip173_example_addresses() -> None:
    assert p2wpkh_address(G_COMPRESSED, "mainnet") == BIP173_MAINNET
    assert p2wpkh_address(G_COMPRESSED, "testnet") == BIP173_TESTNET
    assert validate_address(BIP173_MAINNET.upper(), "btc", "mainnet") == BIP173_MAINNET
    hrp, version, program = decode_segwit(BIP173_MAINNET)
    assert (hrp, version, program.hex()) == ("bc", 0, "751e76e8199196d454941c45d1b3a323f1433bd6")


def test_regtest_prefix() -> None:
    addr = p2wpkh_address(G_COMPRESSED, "regtest")
    assert addr.startswith("bcrt1q")
    assert validate_address(addr, "btc", "regtest") == addr


@pytest.mark.parametrize("address", EIP55)
def test_eip55_examples(address: str) -> None:
    assert to_checksum_address(address.lower()) == address
    assert validate_address(address.lower(), "eth", "mainnet") == address
    assert validate_address("0x" + address[2:].upper(), "eth", "testnet") == address


def test_eip55_bad_checksum_refused() -> None:
    good = EIP55[0]
    flipped = good[:3] + good[3].swapcase() + good[4:]
    with pytest.raises(InvalidAddressError, match="EIP-55"):
        validate_address(flipped, "eth", "mainnet")


@pytest.mark.parametrize(
    ("address", "chain", "network", "reason"),
    [
        (BIP173_MAINNET, "btc", "testnet", "mainnet, not testnet"),
        (BIP173_TESTNET, "btc", "mainnet", "testnet, not mainnet"),
        (BIP173_TESTNET, "btc", "regtest", "testnet, not regtest"),
        (BIP173_MAINNET[:-1] + "5", "btc", "mainnet", "checksum"),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3T4", "btc", "mainnet", "mixes upper and lower"),
        ("", "btc", "mainnet", "empty"),
        (" " + BIP173_MAINNET, "btc", "mainnet", "whitespace"),
        ("0x123", "eth", "mainnet", "40 hexadecimal"),
        ("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "eth", "mainnet", "starts with 0x"),
        ("0x" + "0" * 40, "eth", "mainnet", "zero address"),
        (BIP173_MAINNET, "btc", "signet", "unknown network"),
        (BIP173_MAINNET, "doge", "mainnet", "unknown chain"),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", "btc", "mainnet", "checksum"),
    ],
)
def test_invalid_addresses(address: str, chain: str, network: str, reason: str) -> None:
    with pytest.raises(InvalidAddressError, match=reason):
        validate_address(address, chain, network)


def test_witness_version_must_match_checksum_variant() -> None:
    program = bytes(range(32))
    good_v1 = encode_segwit("bc", 1, program)
    assert validate_address(good_v1, "btc", "mainnet") == good_v1
    # A v1 program encoded with the bech32 (BIP173) checksum must be refused (BIP350).
    from wallet.bech32 import Variant, bech32_encode, convertbits

    wrong = bech32_encode("bc", [1, *convertbits(program, 8, 5, True)], Variant.BECH32)
    with pytest.raises(InvalidAddressError, match="bech32m"):
        validate_address(wrong, "btc", "mainnet")
    v2 = encode_segwit("bc", 2, program)
    with pytest.raises(InvalidAddressError, match="not supported"):
        validate_address(v2, "btc", "mainnet")


def test_base58_legacy_addresses() -> None:
    # Genesis block coinbase address (mainnet P2PKH).
    genesis = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    assert validate_address(genesis, "btc", "mainnet") == genesis
    with pytest.raises(InvalidAddressError, match="mainnet, not testnet"):
        validate_address(genesis, "btc", "testnet")


def test_taproot_address_roundtrip() -> None:
    addr = p2tr_address(G_COMPRESSED, "testnet")
    assert addr.startswith("tb1p")
    assert validate_address(addr, "btc", "testnet") == addr
