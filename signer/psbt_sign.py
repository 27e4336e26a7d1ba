"""BIP174 PSBT signing for the signer: parse, check and summarise, then sign exactly that.

Two layers. `sign_with_keys` is the plain BIP174 Signer role: given private keys it adds a
partial signature (SIGHASH_ALL, RFC6979 nonces) to every ECDSA input whose BIP32 derivations
name one of their public keys; it is what the BIP174 test vectors exercise. `analyze` and
`sign_checked` are the custody layer used by `coffer-signer sign` and the hot signer: they
accept only P2WPKH and P2TR key-path inputs whose derivation names this keystore's
fingerprint and re-derive every such key (and every output that claims to be change) from the
keystore, refuse missing or contradictory UTXO data and fees above the caps, and bind the
signature step to the summary that was shown (a digest of the unsigned transaction and the
spent outputs), so a PSBT that changed after the summary is refused. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from signer.errors import DerivationError, PsbtRefusedError
from signer.hd import HARDENED, btc_coin_type, derive, embit_network, format_path

SIGHASH_DEFAULT = 0x00
SIGHASH_ALL = 0x01
# Witness weight of a spend we sign (BIP141 weight units, each witness byte counts 1):
# P2WPKH: item count 1 + (1 + 72 sig incl. sighash byte) + (1 + 33 pubkey) = 108.
# P2TR key path: item count 1 + (1 + 64 Schnorr sig) = 66 (SIGHASH_DEFAULT, no sighash byte).
_WITNESS_WU = {"p2wpkh": 108, "p2tr": 66}
_SEGWIT_MARKER_WU = 2
DEFAULT_MAX_FEE_SAT = 1_000_000  # 0.01 BTC
DEFAULT_MAX_FEE_RATE_MSAT_PER_VB = 1_000_000  # 1000 sat/vB, in milli-sat per vbyte
SIGNABLE_TYPES = ("p2wpkh", "p2tr")


@dataclass(frozen=True, slots=True)
class FeeCaps:
    """Refuse to sign above these: absolute fee (sat) and fee rate (milli-sat per vbyte)."""

    max_fee_sat: int = DEFAULT_MAX_FEE_SAT
    max_fee_rate_msat_per_vb: int = DEFAULT_MAX_FEE_RATE_MSAT_PER_VB


@dataclass(frozen=True, slots=True)
class InputLine:
    index: int
    outpoint: str  # txid:vout
    amount_sat: int
    script_type: str
    path: str | None  # our derivation path, None for an input this keystore does not sign


@dataclass(frozen=True, slots=True)
class OutputLine:
    index: int
    address: str
    amount_sat: int
    change_path: str | None  # set only when verified by derivation from this keystore

    @property
    def is_change(self) -> bool:
        return self.change_path is not None


@dataclass(frozen=True, slots=True)
class PsbtSummary:
    """What the officer is shown, and what `sign_checked` will sign (bound by `digest`)."""

    network: str
    fingerprint: str
    txid: str
    inputs: tuple[InputLine, ...]
    outputs: tuple[OutputLine, ...]
    total_in_sat: int
    total_out_sat: int
    fee_sat: int
    vsize_vb: int
    fee_rate_msat_per_vb: int
    digest: bytes
    locktime: int = 0

    @property
    def spend_sat(self) -> int:
        """Amount leaving the wallet to outputs that are not our change (fee excluded)."""
        return sum(o.amount_sat for o in self.outputs if not o.is_change)

    def lines(self) -> list[str]:
        rate = self.fee_rate_msat_per_vb
        out = [
            f"PSBT for {self.network}, keystore {self.fingerprint}, txid {self.txid}, locktime {self.locktime}",
            f"inputs: {len(self.inputs)}, total in {format_btc(self.total_in_sat)} BTC ({self.total_in_sat} sat)",
        ]
        for i in self.inputs:
            who = f"ours {i.path}" if i.path else "NOT signed by this keystore"
            out.append(f"  in  #{i.index} {i.outpoint} {i.amount_sat} sat {i.script_type} ({who})")
        for o in self.outputs:
            tag = f"CHANGE (verified {o.change_path})" if o.is_change else "external"
            out.append(f"  out #{o.index} {o.address} {format_btc(o.amount_sat)} BTC ({o.amount_sat} sat) {tag}")
        out.append(f"sending (not change): {format_btc(self.spend_sat)} BTC ({self.spend_sat} sat)")
        out.append(
            f"fee: {self.fee_sat} sat, {rate // 1000}.{rate % 1000:03d} sat/vB over an estimated {self.vsize_vb} vB"
        )
        return out


def format_btc(amount_sat: int) -> str:
    """Satoshi -> exact decimal BTC string (8 places)."""
    sign = "-" if amount_sat < 0 else ""
    whole, frac = divmod(abs(amount_sat), 100_000_000)
    return f"{sign}{whole}.{frac:08d}"


def parse_psbt(data: bytes) -> tuple[Any, str]:
    """Parse binary or base64 PSBT bytes; returns (embit PSBT, "binary" | "base64")."""
    from embit.psbt import PSBT

    if data.startswith(b"psbt\xff"):
        form, raw = "binary", data
    else:
        form = "base64"
        try:
            raw = base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            raise PsbtRefusedError("input is neither a binary PSBT nor valid base64") from None
    try:
        psbt = PSBT.parse(raw)
    except Exception as exc:  # embit raises many error types for malformed input
        raise PsbtRefusedError(f"not a valid PSBT: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    _check_unsigned_tx(raw)
    return psbt, form


def _check_unsigned_tx(raw: bytes) -> None:
    """BIP174: the global unsigned transaction (version 0) has empty scriptSigs and no witness
    serialization. embit drops scriptSigs silently when parsing, so check the raw field here."""
    from embit import compact
    from embit.transaction import Transaction

    if raw[5:7] != b"\x01\x00":  # PSBT_GLOBAL_UNSIGNED_TX is the first key of a v0 PSBT
        return
    stream = io.BytesIO(raw[7:])
    size = compact.read_from(stream)
    tx_bytes = stream.read(size)
    if len(tx_bytes) >= 6 and tx_bytes[4:6] == b"\x00\x01":
        raise PsbtRefusedError("not a valid PSBT: the unsigned transaction uses witness serialization (BIP174)")
    tx = Transaction.parse(tx_bytes)
    if any(len(vin.script_sig.data) for vin in tx.vin):
        raise PsbtRefusedError("not a valid PSBT: the unsigned transaction has a non-empty scriptSig (BIP174)")


def serialize_psbt(psbt: Any, form: str) -> bytes:
    """The PSBT in the given form (what was read is what is written)."""
    raw = bytes(psbt.serialize())
    return raw if form == "binary" else base64.b64encode(raw) + b"\n"


def _utxo(psbt: Any, i: int) -> Any:
    """The spent output of input i, after checking the UTXO data is present and consistent."""
    inp = psbt.inputs[i]
    if inp.witness_utxo is None and inp.non_witness_utxo is None:
        raise PsbtRefusedError(f"input #{i} has no UTXO data (neither witness nor non-witness UTXO)")
    if inp.non_witness_utxo is not None:
        prev = inp.non_witness_utxo
        if bytes(prev.txid()) != bytes(inp.txid):
            raise PsbtRefusedError(f"input #{i}: non-witness UTXO is not the transaction it spends (txid mismatch)")
        if inp.vout >= len(prev.vout):
            raise PsbtRefusedError(f"input #{i}: spends output {inp.vout} that the previous transaction lacks")
        full = prev.vout[inp.vout]
        if inp.witness_utxo is not None and (
            inp.witness_utxo.value != full.value or inp.witness_utxo.script_pubkey != full.script_pubkey
        ):
            raise PsbtRefusedError(
                f"input #{i}: witness UTXO ({inp.witness_utxo.value} sat) contradicts the non-witness UTXO "
                f"({full.value} sat)"
            )
        return full
    return inp.witness_utxo


def _digest(psbt: Any, utxos: list[Any]) -> bytes:
    h = hashlib.sha256(bytes(psbt.tx.serialize()))
    for u in utxos:
        h.update(bytes(u.serialize()))
    return h.digest()


def _our_derivation(scope: Any, fingerprint: bytes) -> tuple[Any, list[int]] | None:
    """(pubkey, path) of the first BIP32/taproot derivation naming `fingerprint`, or None."""
    for pub, der in scope.bip32_derivations.items():
        if bytes(der.fingerprint) == fingerprint:
            return pub, list(der.derivation)
    for pub, (leaves, der) in scope.taproot_bip32_derivations.items():
        if bytes(der.fingerprint) == fingerprint and not leaves:
            return pub, list(der.derivation)
    return None


def _script_for(script_type: str, pub: Any) -> Any:
    from embit import script

    return script.p2wpkh(pub) if script_type == "p2wpkh" else script.p2tr(pub)


def _check_coin(path: list[int], network: str, what: str) -> None:
    coin = btc_coin_type(network) + HARDENED
    if len(path) < 3 or path[1] != coin:
        raise PsbtRefusedError(
            f"{what}: path {format_path(path)} is not a {network} path (coin type {coin - HARDENED}')"
        )


def analyze(
    psbt: Any,
    root: Any,
    fingerprint: str,
    network: str,
    caps: FeeCaps | None = None,
    *,
    require_non_witness_utxo: bool = True,
) -> PsbtSummary:
    """Check a PSBT against this keystore and return the summary to show (raises PsbtRefusedError).

    `require_non_witness_utxo`: our P2WPKH inputs must carry the full previous transaction.
    BIP143 commits only to the spent input's own amount, so a signer shown a lowered amount for
    another input can be led to pay a hidden fee across two signing rounds (the 2020 "segwit fee
    attack" hardware wallets fixed the same way); P2TR (BIP341) commits to all amounts.
    """
    caps = caps or FeeCaps()
    net = embit_network(network)
    fp = bytes.fromhex(fingerprint)
    utxos: list[Any] = []
    inputs: list[InputLine] = []
    accounts: set[tuple[int, ...]] = set()
    witness_wu = 0
    for i, inp in enumerate(psbt.inputs):
        utxo = _utxo(psbt, i)
        utxos.append(utxo)
        stype = utxo.script_pubkey.script_type() or "unknown"
        if stype not in SIGNABLE_TYPES:
            raise PsbtRefusedError(f"input #{i} is {stype}; this signer handles only P2WPKH and P2TR key-path inputs")
        if require_non_witness_utxo and stype == "p2wpkh" and inp.non_witness_utxo is None:
            raise PsbtRefusedError(
                f"input #{i} lacks its previous transaction (non-witness UTXO), needed to trust a P2WPKH amount"
            )
        witness_wu += _WITNESS_WU[stype]
        ours = _our_derivation(inp, fp)
        path_text = None
        if ours is not None:
            pub, path = ours
            _check_coin(path, network, f"input #{i}")
            key = _derive_checked(root, path, f"input #{i}")
            derived_pub = key.get_public_key()
            if stype == "p2wpkh" and derived_pub.sec() != pub.sec():
                raise PsbtRefusedError(f"input #{i}: the key at {format_path(path)} is not the key the PSBT names")
            if stype == "p2tr" and derived_pub.xonly() != pub.xonly():
                raise PsbtRefusedError(f"input #{i}: the key at {format_path(path)} is not the key the PSBT names")
            if _script_for(stype, derived_pub) != utxo.script_pubkey:
                raise PsbtRefusedError(f"input #{i}: the spent script does not belong to key {format_path(path)}")
            allowed = (None, SIGHASH_ALL) if stype == "p2wpkh" else (None, SIGHASH_DEFAULT)
            if inp.sighash_type not in allowed:
                raise PsbtRefusedError(
                    f"input #{i} asks for sighash type {inp.sighash_type}; only ALL/DEFAULT is signed"
                )
            if inp.taproot_merkle_root:
                raise PsbtRefusedError(f"input #{i} has a taproot script tree; only BIP86 key-path spends are signed")
            accounts.add(tuple(path[:3]))
            path_text = format_path(path)
        inputs.append(InputLine(i, f"{bytes(inp.txid).hex()}:{inp.vout}", int(utxo.value), stype, path_text))
    if not any(line.path for line in inputs):
        raise PsbtRefusedError(f"no input of this PSBT derives from keystore {fingerprint}; nothing to sign")

    outputs: list[OutputLine] = []
    for j, out in enumerate(psbt.outputs):
        spk = out.script_pubkey
        try:
            address = spk.address(net)
        except Exception:
            address = f"script:{bytes(spk.data).hex()}"
        change_path = None
        claim = _our_derivation(out, fp)
        if claim is not None:
            pub, path = claim
            stype = spk.script_type()
            what = f"output #{j} claims to be change at {format_path(path)}"
            if stype not in SIGNABLE_TYPES or len(path) != 5 or tuple(path[:3]) not in accounts:
                raise PsbtRefusedError(f"{what} but is not a P2WPKH/P2TR key of a spending account")
            key = _derive_checked(root, path, what)
            if _script_for(stype, key.get_public_key()) != spk:
                raise PsbtRefusedError(f"{what} but its script does not derive from this keystore")
            change_path = format_path(path)
        outputs.append(OutputLine(j, address, int(out.value), change_path))

    total_in = sum(int(u.value) for u in utxos)
    total_out = sum(o.amount_sat for o in outputs)
    fee = total_in - total_out
    if fee < 0:
        raise PsbtRefusedError(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")
    base_bytes = len(bytes(psbt.tx.serialize()))
    weight = base_bytes * 4 + _SEGWIT_MARKER_WU + witness_wu
    vsize = -(-weight // 4)
    rate = fee * 1000 // vsize
    if fee > caps.max_fee_sat:
        raise PsbtRefusedError(f"fee {fee} sat is above the cap of {caps.max_fee_sat} sat (--max-fee-sat)")
    if fee * 1000 > caps.max_fee_rate_msat_per_vb * vsize:
        cap = caps.max_fee_rate_msat_per_vb
        raise PsbtRefusedError(
            f"fee rate {rate // 1000}.{rate % 1000:03d} sat/vB is above the cap of "
            f"{cap // 1000}.{cap % 1000:03d} sat/vB (--max-fee-rate)"
        )
    return PsbtSummary(
        network=network,
        fingerprint=fingerprint,
        txid=bytes(psbt.tx.txid()).hex(),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        total_in_sat=total_in,
        total_out_sat=total_out,
        fee_sat=fee,
        vsize_vb=vsize,
        fee_rate_msat_per_vb=rate,
        digest=_digest(psbt, utxos),
        locktime=int(psbt.locktime or 0),
    )


def _derive_checked(root: Any, path: list[int], what: str) -> Any:
    try:
        return derive(root, path)
    except DerivationError as exc:
        raise PsbtRefusedError(f"{what}: {exc}") from None


def sign_checked(psbt: Any, root: Any, summary: PsbtSummary) -> int:
    """Sign, in place, exactly the transaction `summary` describes; returns signatures added.

    Raises PsbtRefusedError if the PSBT differs from the summarised one in any output, input or
    spent amount (e.g. an amount edited after the summary was shown).
    """
    utxos = [_utxo(psbt, i) for i in range(len(psbt.inputs))]
    if len(utxos) != len(summary.inputs) or _digest(psbt, utxos) != summary.digest:
        raise PsbtRefusedError("the PSBT changed after its summary was shown; nothing was signed")
    fp = bytes.fromhex(summary.fingerprint)
    keys: dict[bytes, Any] = {}
    xonly_keys: dict[bytes, Any] = {}
    for line in summary.inputs:
        if line.path is None:
            continue
        ours = _our_derivation(psbt.inputs[line.index], fp)
        if ours is None:  # the digest does not cover derivation fields: re-check rather than assume
            raise PsbtRefusedError(f"input #{line.index} no longer names this keystore; nothing was signed")
        if format_path(ours[1]) != line.path:
            raise PsbtRefusedError(f"input #{line.index} changed its derivation path after the summary")
        key = derive(root, ours[1]).key
        if line.script_type == "p2wpkh":
            keys[key.get_public_key().sec()] = key
        else:
            xonly_keys[key.xonly()] = key
    count = sign_with_keys(psbt, keys, only_types=("p2wpkh",))
    count += _sign_taproot_keypath(psbt, xonly_keys)
    return count


def _sign_taproot_keypath(psbt: Any, xonly_keys: Mapping[bytes, Any]) -> int:
    """BIP341 key-path signatures (SIGHASH_DEFAULT) for P2TR inputs whose internal key we hold."""
    from embit.script import Witness

    count = 0
    for i, inp in enumerate(psbt.inputs):
        if inp.utxo is None or inp.utxo.script_pubkey.script_type() != "p2tr":
            continue
        for pub in inp.taproot_bip32_derivations:
            key = xonly_keys.get(pub.xonly())
            if key is None:
                continue
            tweaked = key.taproot_tweak(b"")
            if tweaked.xonly() not in bytes(inp.utxo.script_pubkey.data):
                continue
            sighash = psbt.sighash(i, sighash=SIGHASH_DEFAULT)
            sig = tweaked.schnorr_sign(sighash)
            inp.final_scriptwitness = Witness([sig.serialize()])
            count += 1
            break
    return count


def sign_with_keys(psbt: Any, keys: Mapping[bytes, Any], only_types: Iterable[str] | None = None) -> int:
    """BIP174 Signer: add SIGHASH_ALL ECDSA partial signatures with `keys` (sec pubkey -> embit PrivateKey).

    An input is signed by each key whose public key appears in its BIP32 derivations, provided
    its spent-output type is in `only_types` (None: any ECDSA type embit can hash: P2PKH,
    P2SH, P2WPKH, P2WSH, nested). Nonces are RFC6979 without low-R grinding, as in BIP174's
    vectors. Inputs with a different sighash type, or already finalized, are left alone.
    """
    allowed = None if only_types is None else set(only_types)
    count = 0
    for i, inp in enumerate(psbt.inputs):
        if inp.final_scriptwitness is not None or inp.final_scriptsig is not None:
            continue
        utxo = inp.utxo
        if utxo is None:
            continue
        stype = utxo.script_pubkey.script_type()
        if stype == "p2tr" or (allowed is not None and stype not in allowed):
            continue
        if inp.sighash_type not in (None, SIGHASH_ALL):
            continue
        for pub in inp.bip32_derivations:
            key = keys.get(pub.sec())
            if key is None:
                continue
            sighash = psbt.sighash(i, sighash=SIGHASH_ALL)
            sig = key.sign(sighash, grind=False)
            inp.partial_sigs[pub] = bytes(sig.serialize()) + bytes([SIGHASH_ALL])
            count += 1
    return count
