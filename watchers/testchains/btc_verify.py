"""Input signature verification for the Bitcoin regtest chain: P2WPKH (BIP143) and P2TR key path (BIP341).

Pure functions, no I/O. The BIP143 sighash comes from embit (`sighash_segwit`); the BIP341
sighash is computed here (`taproot_sighash`), because embit 0.8's `sighash_taproot` gets
SIGHASH_SINGLE and ANYONECANPAY wrong (checked against the BIP341 wallet vectors); the curve
math is coincurve's (ECDSA for P2WPKH, BIP340 Schnorr for P2TR). Any other kind of
prevout script (P2PKH, P2SH, P2WSH, taproot script path) is refused: the regtest chain only
creates and spends the two kinds the custody service uses. Failures raise `TxRejectedError`
whose message follows Bitcoin Core's reject reasons where one exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from watchers.testchains.errors import TxRejectedError

SIGHASH_DEFAULT = 0x00
SIGHASH_ALL = 0x01
SIGHASH_NONE = 0x02
SIGHASH_SINGLE = 0x03
SIGHASH_ANYONECANPAY = 0x80
_VALID_HASH_TYPES = frozenset({0x01, 0x02, 0x03, 0x81, 0x82, 0x83})
SCRIPT_VERIFY_FAILED = "mandatory-script-verify-flag-failed"


def hash160(data: bytes) -> bytes:
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()


def is_p2wpkh(script: bytes) -> bool:
    return len(script) == 22 and script[:2] == b"\x00\x14"


def is_p2tr(script: bytes) -> bool:
    return len(script) == 34 and script[:2] == b"\x51\x20"


def _fail(index: int, reason: str) -> TxRejectedError:
    return TxRejectedError(f"{SCRIPT_VERIFY_FAILED} ({reason}) on input {index}")


def verify_input(tx: Any, index: int, prevout_scripts: Sequence[bytes], prevout_values_sat: Sequence[int]) -> None:
    """Verify input `index` of embit Transaction `tx`, given every input's prevout script and value.

    Raises TxRejectedError when the input is not a valid P2WPKH or P2TR key-path spend.
    """
    script = prevout_scripts[index]
    txin = tx.vin[index]
    if is_p2wpkh(script):
        if txin.script_sig.data:
            raise _fail(index, "native segwit input with a non-empty scriptSig")
        _verify_p2wpkh(tx, index, script, prevout_values_sat[index])
    elif is_p2tr(script):
        if txin.script_sig.data:
            raise _fail(index, "native segwit input with a non-empty scriptSig")
        _verify_p2tr_key_path(tx, index, script, prevout_scripts, prevout_values_sat)
    else:
        raise TxRejectedError(
            f"non-mandatory-script-verify-flag (this regtest chain only spends P2WPKH and P2TR outputs) "
            f"on input {index}")


def _verify_p2wpkh(tx: Any, index: int, script: bytes, value_sat: int) -> None:
    from coincurve import PublicKey
    from embit.script import Script

    items = list(tx.vin[index].witness.items)
    if len(items) != 2:
        raise _fail(index, "P2WPKH witness must be <signature> <pubkey>")
    sig, pubkey = bytes(items[0]), bytes(items[1])
    if len(pubkey) != 33 or pubkey[0] not in (2, 3):
        raise _fail(index, "P2WPKH needs a compressed public key")
    if hash160(pubkey) != script[2:]:
        raise _fail(index, "public key does not match the witness program")
    if len(sig) < 9 or sig[-1] not in _VALID_HASH_TYPES:
        raise _fail(index, "bad signature encoding or sighash type")
    hash_type = sig[-1]
    if hash_type & 0x1F == SIGHASH_SINGLE and index >= len(tx.vout):
        raise _fail(index, "SIGHASH_SINGLE without a matching output")
    script_code = Script(b"\x76\xa9\x14" + script[2:] + b"\x88\xac")  # BIP143: P2PKH of the key hash
    msg = tx.sighash_segwit(index, script_code, value_sat, hash_type)
    try:
        ok = PublicKey(pubkey).verify(sig[:-1], msg, hasher=None)
    except Exception:  # malformed DER or point: invalid, not a crash
        ok = False
    if not ok:
        raise _fail(index, "Signature must be zero for failed CHECK(MULTI)SIG operation")


def _verify_p2tr_key_path(tx: Any, index: int, script: bytes, prevout_scripts: Sequence[bytes],
                          prevout_values_sat: Sequence[int]) -> None:
    from coincurve import PublicKeyXOnly

    items = [bytes(i) for i in tx.vin[index].witness.items]
    annex: bytes | None = None
    if len(items) >= 2 and items[-1][:1] == b"\x50":  # BIP341: last item starting 0x50 is the annex
        annex = items.pop()
    if len(items) != 1:
        raise _fail(index, "taproot script-path spends are not supported by this regtest chain")
    sig = items[0]
    if len(sig) == 64:
        hash_type = SIGHASH_DEFAULT
    elif len(sig) == 65 and sig[64] in _VALID_HASH_TYPES:
        hash_type = sig[64]
        sig = sig[:64]
    else:
        raise _fail(index, "Invalid Schnorr signature size or hash type")
    if hash_type & 0x03 == SIGHASH_SINGLE and index >= len(tx.vout):
        raise _fail(index, "SIGHASH_SINGLE without a matching output")
    msg = taproot_sighash(tx, index, prevout_scripts, prevout_values_sat, hash_type, annex)
    try:
        ok = PublicKeyXOnly(script[2:]).verify(sig, msg)
    except Exception:  # an x coordinate not on the curve: invalid
        ok = False
    if not ok:
        raise _fail(index, "Invalid Schnorr signature")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _compact(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def _outpoint(txin: Any) -> bytes:
    return bytes(txin.txid)[::-1] + int(txin.vout).to_bytes(4, "little")


def taproot_sighash(tx: Any, index: int, prevout_scripts: Sequence[bytes], prevout_values_sat: Sequence[int],
                    hash_type: int, annex: bytes | None = None) -> bytes:
    """BIP341 signature message hash for a key-path spend (ext_flag 0) of input `index`."""
    if len(prevout_scripts) != len(tx.vin) or len(prevout_values_sat) != len(tx.vin):
        raise TxRejectedError("every input's prevout is needed for a taproot sighash")
    output_type = SIGHASH_ALL if hash_type == SIGHASH_DEFAULT else hash_type & 0x03
    anyone_can_pay = bool(hash_type & SIGHASH_ANYONECANPAY)
    msg = bytes([hash_type]) + int(tx.version).to_bytes(4, "little") + int(tx.locktime).to_bytes(4, "little")
    if not anyone_can_pay:
        msg += _sha256(b"".join(_outpoint(i) for i in tx.vin))
        msg += _sha256(b"".join(v.to_bytes(8, "little") for v in prevout_values_sat))
        msg += _sha256(b"".join(_compact(len(s)) + s for s in prevout_scripts))
        msg += _sha256(b"".join(int(i.sequence).to_bytes(4, "little") for i in tx.vin))
    if output_type not in (SIGHASH_NONE, SIGHASH_SINGLE):
        msg += _sha256(b"".join(o.serialize() for o in tx.vout))
    msg += bytes([1 if annex is not None else 0])
    if anyone_can_pay:
        txin = tx.vin[index]
        script = prevout_scripts[index]
        msg += _outpoint(txin) + prevout_values_sat[index].to_bytes(8, "little") + _compact(len(script)) + script
        msg += int(txin.sequence).to_bytes(4, "little")
    else:
        msg += index.to_bytes(4, "little")
    if annex is not None:
        msg += _sha256(_compact(len(annex)) + annex)
    if output_type == SIGHASH_SINGLE:
        msg += _sha256(tx.vout[index].serialize())
    tag = _sha256(b"TapSighash")
    return _sha256(tag + tag + b"\x00" + msg)
