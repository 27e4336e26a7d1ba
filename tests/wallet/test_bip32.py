"""BIP32 test vectors 1-5 (tests/vectors/bip32_vectors.json), SLIP-132 versions, repr safety."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.wallet.vectors import load
from wallet.bip32 import ExtendedKey, parse_extended_key, parse_path
from wallet.errors import DerivationError, InvalidKeyError, WrongNetworkError

DATA = load("bip32_vectors.json")
CHAINS = [(v["name"], v["seed_hex"], c) for v in DATA["valid"] for c in v["chains"]]

# What our error must say for each vector-5 case (so a mistyped vector cannot pass as a
# checksum failure).
EXPECTED = {
    "pubkey version / prvkey mismatch": "pubkey version / prvkey mismatch",
    "prvkey version / pubkey mismatch": "prvkey version / pubkey mismatch",
    "invalid pubkey prefix 04": "invalid public key prefix 04",
    "invalid prvkey prefix 04": "invalid private key prefix 04",
    "invalid pubkey prefix 01": "invalid public key prefix 01",
    "invalid prvkey prefix 01": "invalid private key prefix 01",
    "zero depth with non-zero parent fingerprint": "zero depth with non-zero parent fingerprint",
    "zero depth with non-zero index": "zero depth with non-zero index",
    "unknown extended key version": "unknown extended key version",
    "private key 0 not in 1..n-1": "not in the range 1..n-1",
    "private key n not in 1..n-1": "not in the range 1..n-1",
    "invalid checksum": "checksum is wrong",
}


@pytest.mark.parametrize(("name", "seed_hex", "chain"), CHAINS, ids=[f"{n}:{c['path']}" for n, _, c in CHAINS])
def test_valid_vectors(name: str, seed_hex: str, chain: dict[str, Any]) -> None:
    master = ExtendedKey.from_seed(bytes.fromhex(seed_hex), "mainnet")
    node = master.derive(chain["path"])
    assert node.serialize() == chain["xprv"]
    assert node.neuter().serialize() == chain["xpub"]
    # Round trip through parsing.
    assert ExtendedKey.parse(chain["xprv"]) == node
    assert ExtendedKey.parse(chain["xpub"]) == node.neuter()


def test_public_derivation_matches_private() -> None:
    """CKDpub of a parent xpub equals neuter(CKDpriv) for the non-hardened steps of vector 1/2."""
    for _, seed_hex, chain in CHAINS:
        indices = parse_path(chain["path"])
        if not indices or indices[-1] >= 0x80000000:
            continue
        master = ExtendedKey.from_seed(bytes.fromhex(seed_hex), "mainnet")
        parent = master.derive(indices[:-1]).neuter()
        assert parent.child(indices[-1]).serialize() == chain["xpub"]


@pytest.mark.parametrize("case", DATA["invalid"], ids=[c["reason"] for c in DATA["invalid"]])
def test_vector5_invalid_keys_refused(case: dict[str, str]) -> None:
    reason = case["reason"]
    expected = EXPECTED.get(reason, "not a point on secp256k1")
    with pytest.raises(InvalidKeyError, match=re.escape(expected)):
        ExtendedKey.parse(case["key"])


def test_hardened_from_public_refused() -> None:
    xpub = DATA["valid"][0]["chains"][0]["xpub"]
    key = ExtendedKey.parse(xpub)
    with pytest.raises(DerivationError, match="hardened"):
        key.child(0x80000000)
    with pytest.raises(DerivationError, match="hardened"):
        key.derive("m/0'")


def test_network_check() -> None:
    xpub = DATA["valid"][0]["chains"][0]["xpub"]
    assert parse_extended_key(xpub, "mainnet").depth == 0
    with pytest.raises(WrongNetworkError, match="not testnet"):
        parse_extended_key(xpub, "testnet")
    tpub = ExtendedKey.parse(xpub).with_version("tpub").serialize()
    assert tpub.startswith("tpub")
    assert parse_extended_key(tpub, "regtest").version.prefix == "tpub"
    with pytest.raises(WrongNetworkError, match="not mainnet"):
        parse_extended_key(tpub, "mainnet")
    with pytest.raises(InvalidKeyError, match="expected an extended public key"):
        parse_extended_key(DATA["valid"][0]["chains"][0]["xprv"], "mainnet", public_only=True)


def test_slip132_roundtrip() -> None:
    node = ExtendedKey.parse(DATA["valid"][0]["chains"][1]["xpub"])
    for prefix in ("zpub", "vpub", "ypub", "upub", "tpub", "xpub"):
        text = node.with_version(prefix).serialize()
        assert text.startswith(prefix)
        again = ExtendedKey.parse(text)
        assert again.version.prefix == prefix and again.public_key == node.public_key
        assert again.chain_code == node.chain_code
    with pytest.raises(InvalidKeyError):
        node.with_version("zprv")


def test_corrupted_key_refused() -> None:
    xpub = DATA["valid"][0]["chains"][2]["xpub"]
    corrupted = xpub[:20] + ("A" if xpub[20] != "A" else "B") + xpub[21:]
    with pytest.raises(InvalidKeyError, match="checksum"):
        ExtendedKey.parse(corrupted)
    with pytest.raises(InvalidKeyError, match="base58 alphabet"):
        ExtendedKey.parse(xpub[:10] + "0" + xpub[11:])
    with pytest.raises(InvalidKeyError):
        ExtendedKey.parse(xpub[:-5])


def test_repr_shows_fingerprint_never_key_material() -> None:
    chain = DATA["valid"][0]["chains"][1]
    for text in (chain["xprv"], chain["xpub"]):
        key = ExtendedKey.parse(text)
        shown = repr(key) + str(key)
        assert key.fingerprint.hex() in shown
        for secret in (key.chain_code.hex(), key.public_key.hex(), text, text[4:40]):
            assert secret not in shown
        if key.is_private:
            assert key.private_key.hex() not in shown


@pytest.mark.parametrize("bad", ["m/x", "m/01", "m/2147483648", "m/-1", "m//1"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(DerivationError):
        parse_path(bad)
