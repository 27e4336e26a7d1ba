"""Bech32 (BIP173) and bech32m (BIP350) encoding of segregated-witness addresses.

Pure functions, no I/O. `encode_segwit` builds an address from a human-readable part, a
witness version and a program; `decode_segwit` checks the checksum, the variant the witness
version requires (v0: bech32, v1+: bech32m), case, length and program size, and raises
`InvalidAddressError` with the reason.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache

from wallet.errors import InvalidAddressError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_MAP = {c: i for i, c in enumerate(CHARSET)}
_GENERATORS = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
BECH32_CONST = 1
BECH32M_CONST = 0x2BC830A3


class Variant(Enum):
    BECH32 = BECH32_CONST
    BECH32M = BECH32M_CONST


def _make_table() -> tuple[int, ...]:
    table = []
    for top in range(32):
        acc = 0
        for i, gen in enumerate(_GENERATORS):
            if (top >> i) & 1:
                acc ^= gen
        table.append(acc)
    return tuple(table)


# XOR of the generators selected by each 5-bit top value: one look-up per symbol instead of
# five conditional XORs (the derivation benchmark spends much of its time here).
_TABLE = _make_table()


def _polymod(values: list[int]) -> int:
    chk = 1
    table = _TABLE
    for value in values:
        chk = (((chk & 0x1FFFFFF) << 5) ^ value) ^ table[chk >> 25]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


@lru_cache(maxsize=8)
def _hrp_state(hrp: str) -> int:
    """Polymod state after the expanded hrp: computed once per hrp (addresses share it)."""
    return _polymod(_hrp_expand(hrp))


def _checksum(hrp: str, data: list[int], variant: Variant) -> list[int]:
    chk = _hrp_state(hrp)
    table = _TABLE
    for value in data:
        chk = (((chk & 0x1FFFFFF) << 5) ^ value) ^ table[chk >> 25]
    for _ in range(6):
        chk = ((chk & 0x1FFFFFF) << 5) ^ table[chk >> 25]
    polymod = chk ^ variant.value
    return [(polymod >> (5 * (5 - i))) & 31 for i in range(6)]


def _to_5bit(data: bytes) -> list[int]:
    """8 -> 5 bit regrouping with zero padding, via one big integer (encoding fast path)."""
    bits = len(data) * 8
    pad = -bits % 5
    value = int.from_bytes(data, "big") << pad
    count = (bits + pad) // 5
    return [(value >> (5 * (count - 1 - i))) & 31 for i in range(count)]


def convertbits(data: bytes | list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    """Regroup bits (8 -> 5 with padding to encode, 5 -> 8 without to decode)."""
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise InvalidAddressError("invalid data value in bech32 payload")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise InvalidAddressError("invalid padding in bech32 payload")
    return out


def bech32_encode(hrp: str, data: list[int], variant: Variant) -> str:
    combined = data + _checksum(hrp, data, variant)
    return hrp + "1" + "".join(CHARSET[d] for d in combined)


def bech32_decode(text: str) -> tuple[str, list[int], Variant]:
    """Split and checksum-verify a bech32/bech32m string; returns (hrp, data without checksum, variant)."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise InvalidAddressError("address contains characters outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise InvalidAddressError("address mixes upper and lower case")
    if len(text) > 90:
        raise InvalidAddressError("address is longer than 90 characters")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise InvalidAddressError("address has no human-readable part separator '1'")
    if pos + 7 > len(text):
        raise InvalidAddressError("address is too short to hold a checksum")
    hrp = text[:pos]
    try:
        data = [_CHARSET_MAP[c] for c in text[pos + 1 :]]
    except KeyError:
        raise InvalidAddressError("address contains a character outside the bech32 alphabet") from None
    const = _polymod(_hrp_expand(hrp) + data)
    if const == BECH32_CONST:
        variant = Variant.BECH32
    elif const == BECH32M_CONST:
        variant = Variant.BECH32M
    else:
        raise InvalidAddressError("address checksum is wrong (mistyped or corrupted)")
    return hrp, data[:-6], variant


def encode_segwit(hrp: str, witness_version: int, program: bytes) -> str:
    """The segwit address of `program` (v0: bech32, v1..16: bech32m)."""
    if not 0 <= witness_version <= 16:
        raise InvalidAddressError(f"witness version {witness_version} is out of range 0..16")
    variant = Variant.BECH32 if witness_version == 0 else Variant.BECH32M
    return bech32_encode(hrp, [witness_version, *_to_5bit(program)], variant)


def decode_segwit(address: str) -> tuple[str, int, bytes]:
    """(hrp, witness version, program) of a segwit address, fully validated."""
    hrp, data, variant = bech32_decode(address)
    if not data:
        raise InvalidAddressError("address has no witness version")
    version = data[0]
    if version > 16:
        raise InvalidAddressError(f"witness version {version} is out of range 0..16")
    program = bytes(convertbits(data[1:], 5, 8, False))
    if not 2 <= len(program) <= 40:
        raise InvalidAddressError(f"witness program has {len(program)} bytes (must be 2..40)")
    if version == 0 and len(program) not in (20, 32):
        raise InvalidAddressError(f"witness v0 program has {len(program)} bytes (must be 20 or 32)")
    if version == 0 and variant is not Variant.BECH32:
        raise InvalidAddressError("witness v0 address must use bech32, not bech32m (BIP350)")
    if version != 0 and variant is not Variant.BECH32M:
        raise InvalidAddressError(f"witness v{version} address must use bech32m, not bech32 (BIP350)")
    return hrp, version, program
