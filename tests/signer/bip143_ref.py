"""A small independent BIP143 (segwit v0) sighash and transaction parser, written from the BIP text.

Used only by tests, to verify signatures produced through embit without using embit's hashing.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass


def dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _varint(stream: io.BytesIO) -> int:
    first = stream.read(1)[0]
    if first < 0xFD:
        return first
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    return int.from_bytes(stream.read(size), "little")


def _ser_varint(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    return b"\xfe" + n.to_bytes(4, "little")


@dataclass
class Tx:
    version: int
    inputs: list[tuple[bytes, int, bytes, int]]  # (txid LE bytes, vout, scriptSig, sequence)
    outputs: list[tuple[int, bytes]]  # (value sat, scriptPubKey)
    witnesses: list[list[bytes]]
    locktime: int


def parse_tx(raw: bytes) -> Tx:
    s = io.BytesIO(raw)
    version = int.from_bytes(s.read(4), "little")
    segwit = raw[4:6] == b"\x00\x01"
    if segwit:
        s.read(2)
    inputs = []
    for _ in range(_varint(s)):
        prev = s.read(32)
        vout = int.from_bytes(s.read(4), "little")
        script_sig = s.read(_varint(s))
        inputs.append((prev, vout, script_sig, int.from_bytes(s.read(4), "little")))
    outputs = []
    for _ in range(_varint(s)):
        value = int.from_bytes(s.read(8), "little")
        outputs.append((value, s.read(_varint(s))))
    witnesses: list[list[bytes]] = [[] for _ in inputs]
    if segwit:
        for w in witnesses:
            for _ in range(_varint(s)):
                w.append(s.read(_varint(s)))
    locktime = int.from_bytes(s.read(4), "little")
    assert not s.read(), "trailing bytes"
    return Tx(version, inputs, outputs, witnesses, locktime)


def bip143_parts(tx: Tx) -> tuple[bytes, bytes, bytes]:
    prevouts = dsha256(b"".join(p + v.to_bytes(4, "little") for p, v, _, _ in tx.inputs))
    sequences = dsha256(b"".join(seq.to_bytes(4, "little") for _, _, _, seq in tx.inputs))
    outputs = dsha256(b"".join(v.to_bytes(8, "little") + _ser_varint(len(spk)) + spk for v, spk in tx.outputs))
    return prevouts, sequences, outputs


def p2wpkh_sighash_all(tx: Tx, index: int, pubkey_hash: bytes, amount_sat: int) -> bytes:
    """BIP143 signature hash, SIGHASH_ALL, for a P2WPKH input (scriptCode = P2PKH of the key hash)."""
    prevouts, sequences, outputs = bip143_parts(tx)
    prev, vout, _, seq = tx.inputs[index]
    script_code = b"\x19\x76\xa9\x14" + pubkey_hash + b"\x88\xac"
    preimage = (
        tx.version.to_bytes(4, "little") + prevouts + sequences + prev + vout.to_bytes(4, "little") + script_code
        + amount_sat.to_bytes(8, "little") + seq.to_bytes(4, "little") + outputs
        + tx.locktime.to_bytes(4, "little") + (1).to_bytes(4, "little")
    )
    return dsha256(preimage)


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()
