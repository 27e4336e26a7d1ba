"""BIP39 English vectors with passphrase TREZOR (tests/vectors/bip39-trezor-vectors.json)."""

from __future__ import annotations

import pytest

from tests.wallet.vectors import load
from wallet.bip32 import ExtendedKey
from wallet.bip39 import entropy_to_mnemonic, is_valid_mnemonic, mnemonic_to_entropy, mnemonic_to_seed
from wallet.errors import InvalidMnemonicError

ENGLISH = load("bip39-trezor-vectors.json")["english"]


IDS = [f"{i}-{len(e[0]) * 4}bit" for i, e in enumerate(ENGLISH)]


@pytest.mark.parametrize(("entropy", "mnemonic", "seed", "xprv"), ENGLISH, ids=IDS)
def test_trezor_vectors(entropy: str, mnemonic: str, seed: str, xprv: str) -> None:
    assert entropy_to_mnemonic(bytes.fromhex(entropy)) == mnemonic
    assert mnemonic_to_entropy(mnemonic).hex() == entropy
    computed = mnemonic_to_seed(mnemonic, "TREZOR")
    assert computed.hex() == seed
    assert ExtendedKey.from_seed(computed, "mainnet").serialize() == xprv


def test_bad_mnemonics() -> None:
    good = ENGLISH[0][1]
    words = good.split()
    assert is_valid_mnemonic(good)
    with pytest.raises(InvalidMnemonicError, match="checksum"):
        mnemonic_to_entropy(" ".join([*words[:-1], "abandon"]))
    with pytest.raises(InvalidMnemonicError, match="word 3 is not"):
        mnemonic_to_entropy(" ".join([*words[:2], "notaword", *words[3:]]))
    with pytest.raises(InvalidMnemonicError, match="got 11"):
        mnemonic_to_entropy(" ".join(words[:11]))
    with pytest.raises(InvalidMnemonicError) as info:
        mnemonic_to_seed(" ".join([*words[:-1], "zoo"]))
    assert "zoo" not in str(info.value)  # error messages never repeat the words


@pytest.mark.parametrize("words", [12, 15, 18, 21, 24])
def test_generate_mnemonic(words: int) -> None:
    from wallet.bip39 import generate_mnemonic

    phrase = generate_mnemonic(words)
    assert len(phrase.split()) == words and is_valid_mnemonic(phrase)
    assert generate_mnemonic(words) != phrase
    with pytest.raises(InvalidMnemonicError):
        generate_mnemonic(13)
