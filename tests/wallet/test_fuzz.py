"""Property tests: parsers never fail with anything but their own error, and encodings round-trip."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.addresses import p2tr_address, p2wpkh_address, validate_address
from wallet.base58 import ALPHABET
from wallet.bech32 import CHARSET, decode_segwit, encode_segwit
from wallet.bip32 import ExtendedKey
from wallet.bip39 import mnemonic_to_seed
from wallet.derive import check_index
from wallet.errors import DerivationError, InvalidAddressError, InvalidKeyError

ACCOUNT = ExtendedKey.from_seed(mnemonic_to_seed("abandon " * 11 + "about"), "testnet").derive("m/84'/1'/0'")
XPUB = ACCOUNT.neuter().serialize()
ADDRESS_TEXT = st.one_of(
    st.text(max_size=100),
    st.text(alphabet="bc1tr" + CHARSET + CHARSET.upper(), max_size=95).map(lambda s: "bcrt1" + s),
    st.text(alphabet=string.hexdigits, min_size=38, max_size=42).map(lambda s: "0x" + s),
    st.text(alphabet=ALPHABET, min_size=20, max_size=40),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(ADDRESS_TEXT, st.sampled_from(["btc", "eth"]), st.sampled_from(["mainnet", "testnet", "regtest"]))
def test_validate_address_only_raises_invalid_address(text: str, chain: str, network: str) -> None:
    try:
        normalised = validate_address(text, chain, network)
    except InvalidAddressError:
        return
    assert validate_address(normalised, chain, network) == normalised


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, 16), st.binary(min_size=2, max_size=40), st.sampled_from(["bc", "tb", "bcrt"]))
def test_segwit_roundtrip(version: int, program: bytes, hrp: str) -> None:
    if version == 0 and len(program) not in (20, 32):
        return
    address = encode_segwit(hrp, version, program)
    assert decode_segwit(address) == (hrp, version, program)
    assert decode_segwit(address.upper()) == (hrp, version, program)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(0, len(XPUB) - 1), st.sampled_from(ALPHABET))
def test_single_character_corruption_of_xpub_is_refused(position: int, char: str) -> None:
    corrupted = XPUB[:position] + char + XPUB[position + 1:]
    if corrupted == XPUB:
        return
    with pytest.raises(InvalidKeyError):
        ExtendedKey.parse(corrupted)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=120))
def test_extended_key_parse_only_raises_invalid_key(text: str) -> None:
    try:
        key = ExtendedKey.parse(text)
    except InvalidKeyError:
        return
    assert key.serialize() == text.strip()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["mainnet", "testnet", "regtest"]))
def test_derived_addresses_validate(index: int, network: str) -> None:
    pubkey = ACCOUNT.derive([0, index]).public_key
    for address in (p2wpkh_address(pubkey, network), p2tr_address(pubkey, network)):
        assert validate_address(address, "btc", network) == address
        for other in ("mainnet", "testnet", "regtest"):
            if other != network:  # bech32 prefixes differ on all three networks
                with pytest.raises(InvalidAddressError):
                    validate_address(address, "btc", other)


@given(st.text(max_size=20))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_check_index_only_raises_derivation_error(text: str) -> None:
    try:
        value = check_index(text)
    except DerivationError:
        return
    assert 0 <= value < 2**31
