"""Bitcoin withdrawal transactions, pure: coin selection, fee, change, and the PSBT the hot signer reads.

Coins are the hot wallet's confirmed P2WPKH outputs (deposit outputs count: deposit addresses
derive from the hot account xpub). Selection is largest-first over confirmed coins, which keeps
the input count (and so the fee) low; the fee is `ceil(rate * vsize)` with the rate in milli-sat
per vbyte and vsize estimated from the output scripts (P2WPKH input 68 vB, see BIP141 weights).
Change below the dust limit is not created: it goes to the fee. Every input and the change carry
BIP32 derivations naming the hot fingerprint, and every input carries its full previous
transaction (non-witness UTXO), as `signer.hot.HotSigner.sign_btc` requires. No I/O here.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.withdrawals_proc.errors import BuildError, InsufficientHotFundsError

# vbytes (BIP141 weight / 4, rounded up per part): version+locktime+counts+segwit marker ~ 11,
# a P2WPKH input 68 (41 non-witness + 108 WU witness / 4 = 27 -> 68 rounded), outputs by type.
TX_OVERHEAD_VB = 11
P2WPKH_INPUT_VB = 68
OUTPUT_VB = {22: 31, 34: 43, 25: 34, 23: 32}  # by scriptPubKey length: p2wpkh, p2wsh/p2tr, p2pkh, p2sh
DUST_LIMIT_SAT = 546
RBF_SEQUENCE = 0xFFFFFFFD  # BIP125 signalling (full-RBF nodes do not need it; older ones do)


@dataclass(frozen=True, slots=True)
class Coin:
    """A spendable hot-wallet output."""

    txid: str
    vout: int
    value_sat: int
    derivation_path: str  # m/84'/1'/0'/0/5
    pubkey: bytes  # 33-byte compressed key at that path
    prev_tx_hex: str  # the full previous transaction

    @property
    def outpoint(self) -> str:
        return f"{self.txid}:{self.vout}"


@dataclass(frozen=True, slots=True)
class ChangeTarget:
    address: str
    derivation_path: str
    pubkey: bytes


@dataclass(frozen=True, slots=True)
class BuiltPsbt:
    psbt_b64: str
    txid: str  # of the unsigned transaction (segwit: equal to the signed txid)
    inputs: tuple[str, ...]  # outpoints
    fee_sat: int
    vsize_vb: int
    change_sat: int
    amount_sat: int


def script_for(address: str) -> bytes:
    from embit import script

    try:
        return bytes(script.address_to_scriptpubkey(address).data)
    except Exception as exc:  # embit raises several types for a bad address
        raise BuildError(f"cannot make an output script for {address}: {exc}") from None


def output_vb(script_len: int) -> int:
    return OUTPUT_VB.get(script_len, 9 + script_len)


def estimate_vsize(n_inputs: int, output_script_lens: Sequence[int]) -> int:
    return TX_OVERHEAD_VB + n_inputs * P2WPKH_INPUT_VB + sum(output_vb(n) for n in output_script_lens)


def fee_for(rate_msat_per_vb: int, vsize_vb: int) -> int:
    """ceil(rate * vsize / 1000) sat."""
    return -(-rate_msat_per_vb * vsize_vb // 1000)


def select_coins(coins: Sequence[Coin], amount_sat: int, dest_script_len: int, change_script_len: int,
                 rate_msat_per_vb: int) -> tuple[list[Coin], int, int]:
    """(chosen coins, fee_sat, change_sat): largest first until amount + fee is covered.

    Raises InsufficientHotFundsError when all coins together cannot pay.
    """
    if amount_sat <= 0:
        raise BuildError("amount must be positive")
    chosen: list[Coin] = []
    total = 0
    for coin in sorted(coins, key=lambda c: (-c.value_sat, c.txid, c.vout)):
        chosen.append(coin)
        total += coin.value_sat
        with_change = fee_for(rate_msat_per_vb, estimate_vsize(len(chosen), (dest_script_len, change_script_len)))
        if total >= amount_sat + with_change:
            change = total - amount_sat - with_change
            if change >= DUST_LIMIT_SAT:
                return chosen, with_change, change
            # no change output: what is left over (less than dust) is added to the fee
            return chosen, total - amount_sat, 0
        without_change = fee_for(rate_msat_per_vb, estimate_vsize(len(chosen), (dest_script_len,)))
        if total >= amount_sat + without_change:
            return chosen, total - amount_sat, 0
    raise InsufficientHotFundsError(
        f"hot wallet has {total} sat in {len(chosen)} confirmed coin(s); {amount_sat} sat plus fee needed")


def _parse_path(path: str) -> list[int]:
    out = []
    for part in path.split("/")[1:]:
        hardened = part.endswith(("'", "h"))
        index = int(part.rstrip("'h"))
        out.append(index + 0x80000000 if hardened else index)
    return out


def build_psbt(coins: Sequence[Coin], *, destination: str, amount_sat: int, fee_sat: int, change_sat: int,
               change: ChangeTarget | None, fingerprint: str) -> BuiltPsbt:
    """The PSBT spending `coins` to `destination` (+ change), with derivations and previous txs."""
    from embit.ec import PublicKey
    from embit.psbt import PSBT, DerivationPath
    from embit.script import Script
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    if change_sat and change is None:
        raise BuildError("change amount without a change address")
    if 0 < change_sat < DUST_LIMIT_SAT:
        raise BuildError(f"change of {change_sat} sat is dust")
    total_in = sum(c.value_sat for c in coins)
    if total_in != amount_sat + fee_sat + change_sat:
        raise BuildError(f"inputs {total_in} sat != amount {amount_sat} + fee {fee_sat} + change {change_sat}")
    fp = bytes.fromhex(fingerprint)
    vin = [TransactionInput(bytes.fromhex(c.txid), c.vout, sequence=RBF_SEQUENCE) for c in coins]
    dest_script = script_for(destination)
    vout = [TransactionOutput(amount_sat, Script(dest_script))]
    if change_sat:
        assert change is not None
        vout.append(TransactionOutput(change_sat, Script(script_for(change.address))))
    tx = Transaction(version=2, vin=vin, vout=vout, locktime=0)
    psbt = PSBT(tx)
    for i, coin in enumerate(coins):
        prev = Transaction.parse(bytes.fromhex(coin.prev_tx_hex))
        if bytes(prev.txid()).hex() != coin.txid or coin.vout >= len(prev.vout):
            raise BuildError(f"previous transaction of {coin.outpoint} does not match")
        if int(prev.vout[coin.vout].value) != coin.value_sat:
            raise BuildError(f"coin {coin.outpoint}: chain API says {coin.value_sat} sat, its tx says otherwise")
        inp = psbt.inputs[i]
        inp.non_witness_utxo = prev
        inp.witness_utxo = prev.vout[coin.vout]
        inp.bip32_derivations[PublicKey.parse(coin.pubkey)] = DerivationPath(fp, _parse_path(coin.derivation_path))
    if change_sat:
        assert change is not None
        psbt.outputs[1].bip32_derivations[PublicKey.parse(change.pubkey)] = DerivationPath(
            fp, _parse_path(change.derivation_path))
    vsize = estimate_vsize(len(coins), [len(o.script_pubkey.data) for o in vout])
    return BuiltPsbt(
        psbt_b64=base64.b64encode(bytes(psbt.serialize())).decode(),
        txid=bytes(tx.txid()).hex(),
        inputs=tuple(c.outpoint for c in coins),
        fee_sat=fee_sat,
        vsize_vb=vsize,
        change_sat=change_sat,
        amount_sat=amount_sat,
    )


def finalize_signed(psbt_b64: str) -> tuple[str, str]:
    """(raw transaction hex, txid) of a fully signed PSBT; BuildError if it cannot be finalized."""
    from embit.finalizer import finalize_psbt
    from embit.psbt import PSBT

    try:
        psbt = PSBT.from_base64(psbt_b64.strip())
    except Exception as exc:
        raise BuildError(f"not a valid base64 PSBT: {exc}") from None
    final = finalize_psbt(psbt)
    if final is None:
        raise BuildError("the PSBT is not fully signed (cannot be finalized)")
    return bytes(final.serialize()).hex(), bytes(final.txid()).hex()


def bump_psbt(old_b64: str, *, new_fee_sat: int) -> tuple[str, int, int]:
    """A replacement (RBF) of an unsigned/signed PSBT: same inputs, same destination output, the
    fee raised to `new_fee_sat` by taking it from the change. Returns (new unsigned PSBT base64,
    new change sat, vsize). Signatures are dropped (the replacement is signed anew).

    Raises BuildError when the change cannot pay the higher fee without dropping below dust
    (then the change output is removed if that alone pays it).
    """
    from embit.psbt import PSBT

    psbt = PSBT.from_base64(old_b64.strip())
    total_in = 0
    for inp in psbt.inputs:
        utxo = inp.witness_utxo if inp.witness_utxo is not None else inp.non_witness_utxo.vout[inp.vout]
        total_in += int(utxo.value)
        inp.partial_sigs.clear()
        inp.final_scriptwitness = None
        inp.final_scriptsig = None
    dest_value = int(psbt.outputs[0].value)
    if len(psbt.outputs) < 2:
        raise BuildError("no change output to take a higher fee from")
    change = total_in - dest_value - new_fee_sat
    if change < DUST_LIMIT_SAT:
        raise BuildError(f"the change cannot pay a fee of {new_fee_sat} sat (would leave {change} sat)")
    psbt.outputs[1].value = change
    vsize = estimate_vsize(len(psbt.inputs), [len(o.script_pubkey.data) for o in psbt.tx.vout])
    return base64.b64encode(bytes(psbt.serialize())).decode(), change, vsize


def psbt_txid(psbt_b64: str) -> str:
    from embit.psbt import PSBT

    return bytes(PSBT.from_base64(psbt_b64.strip()).tx.txid()).hex()
