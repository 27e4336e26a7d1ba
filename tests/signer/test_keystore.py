"""Keystore: round trip, wrong passphrase, tampering, secret-free reprs, strong defaults."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from signer import keystore
from signer.errors import CorruptKeystoreError, KeystoreError, WrongPassphraseError
from tests.signer.helpers import CHEAP_N, MNEMONIC, PASSPHRASE, make_keystore


def test_round_trip_keeps_seed_and_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    seed = make_keystore(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "coffer-keystore" and doc["version"] == 1
    assert doc["fingerprint"] == "73c5da0a" == seed.fingerprint  # BIP84 test mnemonic's master fingerprint
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["n"] == CHEAP_N
    assert doc["cipher"]["name"] == "aes-256-gcm"
    assert "abandon" not in path.read_text()
    opened = keystore.load(path, PASSPHRASE)
    assert opened.seed_bytes() == seed.seed_bytes()
    assert opened.mnemonic_words() == MNEMONIC
    assert path.stat().st_mode & 0o777 == 0o600


def test_default_kdf_cost_is_strong() -> None:
    assert keystore.DEFAULT_SCRYPT_N >= 2**17


def test_wrong_passphrase_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    make_keystore(path)
    with pytest.raises(WrongPassphraseError) as info:
        keystore.load(path, "not the passphrase")
    assert str(info.value) == "wrong passphrase for this keystore"


@pytest.mark.parametrize(
    "field",
    ["ciphertext", "nonce", "fingerprint", "kdf_n", "salt", "truncate", "not_json"],
)
def test_tampering_is_detected(tmp_path: Path, field: str) -> None:
    path = tmp_path / "ks.json"
    make_keystore(path)
    doc = json.loads(path.read_text())
    if field == "ciphertext":
        ct = bytearray.fromhex(doc["ciphertext"])
        ct[5] ^= 0x01
        doc["ciphertext"] = ct.hex()
    elif field == "nonce":
        doc["cipher"]["nonce"] = "00" * 12
    elif field == "fingerprint":
        doc["fingerprint"] = "deadbeef"
    elif field == "kdf_n":
        doc["kdf"]["n"] = CHEAP_N * 2
    elif field == "salt":
        doc["kdf"]["salt"] = "11" * 16
    if field == "truncate":
        path.write_text(path.read_text()[:-40])
    elif field == "not_json":
        path.write_bytes(b"\x00\x01garbage")
    else:
        path.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError) as info:
        keystore.load(path, PASSPHRASE)
    message = str(info.value)
    assert "\n" not in message
    if field in ("ciphertext", "nonce", "fingerprint", "truncate", "not_json"):
        # the passphrase still matches the verifier, so this is reported as damage, not as a typo
        assert isinstance(info.value, CorruptKeystoreError), message
    else:
        # KDF inputs changed: the verifier no longer matches (indistinguishable from a wrong passphrase)
        assert isinstance(info.value, WrongPassphraseError | CorruptKeystoreError)


def test_reprs_and_errors_never_show_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ks.json"
    seed = make_keystore(path)
    secrets = [MNEMONIC, "abandon", seed.seed_bytes().hex(), PASSPHRASE]
    texts = [repr(seed), str(seed), f"{seed}", repr([seed])]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("unlocked %s %r", seed, seed)
    texts.append(caplog.text)
    for bad in ("wrong", PASSPHRASE + "x"):
        with pytest.raises(KeystoreError) as info:
            keystore.load(path, bad)
        texts.append(str(info.value))
        texts.append(repr(info.value))
    for text in texts:
        for secret in secrets:
            assert secret not in text
    assert "73c5da0a" in repr(seed)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(seed)


def test_refuses_overwrite_and_weak_or_empty_inputs(tmp_path: Path) -> None:
    path = tmp_path / "ks.json"
    make_keystore(path)
    with pytest.raises(KeystoreError):
        make_keystore(path)
    seed = keystore.UnlockedSeed(MNEMONIC)
    with pytest.raises(KeystoreError):
        keystore.seal(seed, "", scrypt_n=CHEAP_N)
    with pytest.raises(KeystoreError):
        keystore.seal(seed, "pw", scrypt_n=16)
    with pytest.raises(KeystoreError):
        keystore.UnlockedSeed("abandon " * 11 + "abandon")  # bad checksum


def test_generated_mnemonics_are_valid_and_distinct() -> None:
    a, b = keystore.generate_mnemonic(12), keystore.generate_mnemonic(24)
    assert len(a.split()) == 12 and len(b.split()) == 24
    assert keystore.UnlockedSeed(a).fingerprint != keystore.UnlockedSeed(b).fingerprint
    with pytest.raises(KeystoreError):
        keystore.generate_mnemonic(15)
