"""BIP39 mnemonics: entropy <-> English words with checksum, and mnemonic -> 64-byte seed.

Pure functions. The English word list is the one shipped with the `mnemonic` package (the
BIP39 reference list); the algorithms are implemented here. Seeds use PBKDF2-HMAC-SHA512,
2048 rounds, salt "mnemonic" + passphrase, both NFKD-normalised. Errors:
`InvalidMnemonicError` (unknown word, bad length, bad checksum). Mnemonics and seeds are
secrets: never log them; error messages never repeat the words.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from functools import lru_cache
from importlib import resources

from wallet.errors import InvalidMnemonicError

VALID_WORD_COUNTS = (12, 15, 18, 21, 24)


@lru_cache(maxsize=1)
def english_wordlist() -> tuple[str, ...]:
    text = resources.files("mnemonic").joinpath("wordlist/english.txt").read_text(encoding="utf-8")
    words = tuple(w.strip() for w in text.splitlines() if w.strip())
    if len(words) != 2048:
        raise InvalidMnemonicError(f"the English BIP39 word list has {len(words)} words, expected 2048")
    return words


@lru_cache(maxsize=1)
def _word_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(english_wordlist())}


def entropy_to_mnemonic(entropy: bytes) -> str:
    """English mnemonic of 16/20/24/28/32 bytes of entropy (12..24 words)."""
    if len(entropy) not in (16, 20, 24, 28, 32):
        raise InvalidMnemonicError(f"entropy must be 16, 20, 24, 28 or 32 bytes, got {len(entropy)}")
    checksum_bits = len(entropy) * 8 // 32
    checksum = hashlib.sha256(entropy).digest()[0] >> (8 - checksum_bits)
    value = (int.from_bytes(entropy, "big") << checksum_bits) | checksum
    count = (len(entropy) * 8 + checksum_bits) // 11
    words = english_wordlist()
    return " ".join(words[(value >> (11 * (count - 1 - i))) & 0x7FF] for i in range(count))


def generate_mnemonic(words: int = 24) -> str:
    """A new English mnemonic from the OS CSPRNG (`secrets`). A secret: show it once, never log it."""
    if words not in VALID_WORD_COUNTS:
        raise InvalidMnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words, not {words}")
    return entropy_to_mnemonic(secrets.token_bytes(words * 11 * 32 // 33 // 8))


def mnemonic_to_entropy(mnemonic: str) -> bytes:
    """The entropy of an English mnemonic; checks word count, words and checksum."""
    words = unicodedata.normalize("NFKD", mnemonic).split()
    if len(words) not in VALID_WORD_COUNTS:
        raise InvalidMnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words, got {len(words)}")
    index = _word_index()
    value = 0
    for position, word in enumerate(words, start=1):
        try:
            value = (value << 11) | index[word]
        except KeyError:
            raise InvalidMnemonicError(f"word {position} is not in the BIP39 English word list") from None
    total_bits = len(words) * 11
    checksum_bits = total_bits // 33
    entropy_bits = total_bits - checksum_bits
    entropy = (value >> checksum_bits).to_bytes(entropy_bits // 8, "big")
    expected = hashlib.sha256(entropy).digest()[0] >> (8 - checksum_bits)
    if value & ((1 << checksum_bits) - 1) != expected:
        raise InvalidMnemonicError("mnemonic checksum is wrong (a word is mistyped or out of order)")
    return entropy


def is_valid_mnemonic(mnemonic: str) -> bool:
    try:
        mnemonic_to_entropy(mnemonic)
    except InvalidMnemonicError:
        return False
    return True


def mnemonic_to_seed(mnemonic: str, passphrase: str = "", *, check: bool = True) -> bytes:
    """64-byte BIP39 seed. With `check` (default) the mnemonic's checksum is verified first."""
    if check:
        mnemonic_to_entropy(mnemonic)
    normalized = unicodedata.normalize("NFKD", " ".join(mnemonic.split()))
    salt = unicodedata.normalize("NFKD", "mnemonic" + passphrase)
    return hashlib.pbkdf2_hmac("sha512", normalized.encode("utf-8"), salt.encode("utf-8"), 2048)
