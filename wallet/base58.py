"""Base58 and Base58Check (Bitcoin alphabet) for extended keys and legacy addresses.

Pure functions. Decoding checks the alphabet and the 4-byte double-SHA256 checksum and
raises the error class the caller passes, so key and address errors stay distinct.
"""

from __future__ import annotations

from wallet.errors import WalletError
from wallet.hashes import double_sha256

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\x00"))
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(ALPHABET[rem])
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str, error: type[WalletError] = WalletError) -> bytes:
    num = 0
    for c in text:
        try:
            num = num * 58 + _INDEX[c]
        except KeyError:
            raise error(f"character {c!r} is not in the base58 alphabet") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\x00" * zeros + body


def b58check_encode(payload: bytes) -> str:
    return b58encode(payload + double_sha256(payload)[:4])


def b58check_decode(text: str, error: type[WalletError] = WalletError) -> bytes:
    """The payload of a Base58Check string; raises `error` on a bad alphabet or checksum."""
    if not text:
        raise error("empty base58 string")
    raw = b58decode(text, error)
    if len(raw) < 5:
        raise error("base58 string too short to hold a checksum")
    payload, checksum = raw[:-4], raw[-4:]
    if double_sha256(payload)[:4] != checksum:
        raise error("base58 checksum is wrong (mistyped or corrupted)")
    return payload
