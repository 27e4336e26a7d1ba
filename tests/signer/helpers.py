"""Shared helpers for the signer tests: cheap keystores, funded regtest PSBTs built by embit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from signer import keystore
from signer.hd import parse_path, root_key

MNEMONIC = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
OTHER_MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"
PASSPHRASE = "correct horse battery staple"
CHEAP_N = 2**10  # tests only: real keystores default to 2**17


def make_keystore(path: Path, mnemonic: str = MNEMONIC, passphrase: str = PASSPHRASE) -> keystore.UnlockedSeed:
    seed = keystore.UnlockedSeed(mnemonic)
    keystore.save(path, keystore.seal(seed, passphrase, scrypt_n=CHEAP_N))
    return seed


def funding_tx(script_pubkey: Any, value_sat: int, tag: int = 0) -> Any:
    """A previous transaction paying `value_sat` to `script_pubkey` (its input is arbitrary)."""
    from embit.script import Script
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    prev_txid = hashlib.sha256(b"coffer-test-funding" + bytes([tag])).digest()
    vin = [TransactionInput(prev_txid, 0, script_sig=Script(b""), sequence=0xFFFFFFFD)]
    filler = TransactionOutput(1000, Script(b"\x00\x14" + bytes(20)))
    return Transaction(version=2, vin=vin, vout=[TransactionOutput(value_sat, script_pubkey), filler], locktime=0)


def build_psbt(
    seed: keystore.UnlockedSeed,
    *,
    network: str = "regtest",
    spend_sat: int = 40_000_000,
    change_sat: int = 59_990_000,
    input_sat: int = 100_000_000,
    script_type: str = "p2wpkh",
    include_non_witness: bool = True,
    change_path: str | None = None,
    change_fingerprint: str | None = None,
) -> Any:
    """A PSBT spending one UTXO of `seed` (m/84'/1'/0'/0/0) to an external address plus change."""
    from embit import script
    from embit.psbt import PSBT, DerivationPath
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    purpose = 84 if script_type == "p2wpkh" else 86
    coin = 0 if network == "mainnet" else 1
    root = root_key(seed, network)
    fp = bytes.fromhex(seed.fingerprint)
    in_path = parse_path(f"m/{purpose}h/{coin}h/0h/0/0")
    in_key = root.derive(in_path)
    spk = script.p2wpkh(in_key) if script_type == "p2wpkh" else script.p2tr(in_key)
    prev = funding_tx(spk, input_sat)
    external = script.p2wpkh(root_key(keystore.UnlockedSeed(OTHER_MNEMONIC), network).derive("m/84h/1h/0h/0/7"))
    ch_path = parse_path(change_path or f"m/{purpose}h/{coin}h/0h/1/0")
    ch_key = root.derive(ch_path)
    ch_spk = script.p2wpkh(ch_key) if script_type == "p2wpkh" else script.p2tr(ch_key)
    tx = Transaction(
        version=2,
        vin=[TransactionInput(prev.txid(), 0, sequence=0xFFFFFFFD)],
        vout=[TransactionOutput(spend_sat, external), TransactionOutput(change_sat, ch_spk)],
        locktime=0,
    )
    psbt = PSBT(tx)
    inp = psbt.inputs[0]
    inp.witness_utxo = prev.vout[0]
    if include_non_witness:
        inp.non_witness_utxo = prev
    ch_fp = bytes.fromhex(change_fingerprint) if change_fingerprint else fp
    if script_type == "p2wpkh":
        inp.bip32_derivations[in_key.get_public_key()] = DerivationPath(fp, in_path)
        psbt.outputs[1].bip32_derivations[ch_key.get_public_key()] = DerivationPath(ch_fp, ch_path)
    else:
        inp.taproot_bip32_derivations[in_key.get_public_key()] = ([], DerivationPath(fp, in_path))
        psbt.outputs[1].taproot_bip32_derivations[ch_key.get_public_key()] = ([], DerivationPath(ch_fp, ch_path))
    return psbt
