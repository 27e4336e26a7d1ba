"""Hash functions used by the wallet: SHA-256, HASH160, BIP340 tagged hashes, Keccak-256.

Pure functions over bytes. RIPEMD-160 comes from hashlib when OpenSSL provides it and from
pycryptodome otherwise (OpenSSL 3 may disable it as a legacy algorithm).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def double_sha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _ripemd160_impl() -> Callable[[bytes], bytes]:
    try:
        hashlib.new("ripemd160", b"")
    except ValueError:
        from Crypto.Hash import RIPEMD160

        return lambda data: RIPEMD160.new(data).digest()
    return lambda data: hashlib.new("ripemd160", data).digest()


ripemd160 = _ripemd160_impl()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)): key ids, fingerprints and P2WPKH programs."""
    return ripemd160(hashlib.sha256(data).digest())


@lru_cache(maxsize=16)
def _tag_prefix(tag: str) -> bytes:
    digest = hashlib.sha256(tag.encode()).digest()
    return digest + digest


def tagged_hash(tag: str, data: bytes) -> bytes:
    """BIP340 tagged hash: SHA256(SHA256(tag) || SHA256(tag) || data)."""
    return hashlib.sha256(_tag_prefix(tag) + data).digest()


def keccak256(data: bytes) -> bytes:
    """Keccak-256 as Ethereum uses it (the pre-standard padding, not SHA3-256)."""
    from Crypto.Hash import keccak

    return keccak.new(digest_bits=256, data=data).digest()
