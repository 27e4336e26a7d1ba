"""PSBT signing: BIP174 signer vectors, the custody checks, summaries, and tamper refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer.errors import PsbtRefusedError
from signer.hd import root_key
from signer.keystore import UnlockedSeed
from signer.psbt_sign import FeeCaps, analyze, parse_psbt, serialize_psbt, sign_checked, sign_with_keys
from tests.signer.helpers import MNEMONIC, OTHER_MNEMONIC, build_psbt

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "bip174_signer.json").read_text())
SEED = UnlockedSeed(MNEMONIC)
ROOT = root_key(SEED, "regtest")


@pytest.mark.parametrize("case", VECTORS["cases"], ids=["signer1", "signer2"])
def test_bip174_signer_vectors(case: dict[str, Any]) -> None:
    from embit.bip32 import HDKey
    from embit.ec import PrivateKey

    from signer.hd import parse_path

    psbt, form = parse_psbt(bytes.fromhex(VECTORS["unsigned_hex"]))
    assert form == "binary"
    master = HDKey.from_string(VECTORS["master_tprv"])
    keys = {}
    for path, wif in case["keys"].items():
        key = PrivateKey.from_wif(wif)
        assert master.derive(parse_path(path)).key.secret == key.secret  # the WIFs are the stated paths
        keys[key.get_public_key().sec()] = key
    assert sign_with_keys(psbt, keys) == 2
    assert serialize_psbt(psbt, "binary").hex() == case["expected_hex"]


def test_summary_shows_outputs_change_fee_and_rate() -> None:
    psbt = build_psbt(SEED)
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    assert summary.total_in_sat == 100_000_000
    assert summary.fee_sat == 100_000_000 - 40_000_000 - 59_990_000 == 10_000
    assert [o.is_change for o in summary.outputs] == [False, True]
    assert summary.outputs[1].change_path == "m/84h/1h/0h/1/0"
    assert summary.outputs[0].address.startswith("bcrt1q")
    # 1-in 2-out P2WPKH: 113 non-witness bytes * 4 + 2 + 108 = 562 WU -> 141 vB (the usual size of a signed one)
    assert summary.vsize_vb == 141
    assert summary.fee_rate_msat_per_vb == 10_000 * 1000 // 141
    text = "\n".join(summary.lines())
    assert "CHANGE (verified m/84h/1h/0h/1/0)" in text and summary.outputs[0].address in text
    assert "fee: 10000 sat, 70.921 sat/vB" in text
    assert "0.40000000 BTC" in text


def test_signs_p2wpkh_and_signature_verifies() -> None:
    from embit import script
    from embit.transaction import SIGHASH

    psbt = build_psbt(SEED)
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    assert sign_checked(psbt, ROOT, summary) == 1
    inp = psbt.inputs[0]
    ((pub, sig),) = inp.partial_sigs.items()
    assert sig[-1] == SIGHASH.ALL
    from embit.ec import Signature

    h = psbt.sighash(0, sighash=SIGHASH.ALL)
    assert pub.verify(Signature.parse(sig[:-1]), h)
    assert script.p2wpkh(pub) == inp.witness_utxo.script_pubkey


def test_signs_p2tr_key_path() -> None:
    from embit.ec import SchnorrSig

    psbt = build_psbt(SEED, script_type="p2tr")
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    assert summary.outputs[1].is_change
    assert sign_checked(psbt, ROOT, summary) == 1
    witness = psbt.inputs[0].final_scriptwitness
    assert len(witness.items) == 1 and len(witness.items[0]) == 64
    output_key = psbt.inputs[0].witness_utxo.script_pubkey.data[2:]
    from coincurve import PublicKeyXOnly

    sighash = psbt.sighash(0, sighash=0)
    assert PublicKeyXOnly(output_key).verify(witness.items[0], sighash)
    assert SchnorrSig.parse(witness.items[0]) is not None


def test_refuses_input_without_utxo_data() -> None:
    psbt = build_psbt(SEED)
    psbt.inputs[0].witness_utxo = None
    psbt.inputs[0].non_witness_utxo = None
    with pytest.raises(PsbtRefusedError, match="input #0 has no UTXO data"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_refuses_witness_utxo_contradicting_non_witness_utxo() -> None:
    from embit.transaction import TransactionOutput

    psbt = build_psbt(SEED)
    real = psbt.inputs[0].witness_utxo
    psbt.inputs[0].witness_utxo = TransactionOutput(real.value + 50_000_000, real.script_pubkey)
    with pytest.raises(PsbtRefusedError, match="contradicts the non-witness UTXO"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_refuses_non_witness_utxo_of_another_tx() -> None:
    from tests.signer.helpers import funding_tx

    psbt = build_psbt(SEED)
    psbt.inputs[0].non_witness_utxo = funding_tx(psbt.inputs[0].witness_utxo.script_pubkey, 10**8, tag=9)
    with pytest.raises(PsbtRefusedError, match="txid mismatch"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_refuses_fee_above_caps() -> None:
    psbt = build_psbt(SEED, change_sat=50_000_000)  # fee 10_000_000 sat
    with pytest.raises(PsbtRefusedError, match="above the cap of 1000000 sat"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    psbt = build_psbt(SEED, change_sat=59_900_000)  # fee 100_000 sat ~ 709 sat/vB
    analyze(psbt, ROOT, SEED.fingerprint, "regtest")  # within the defaults
    with pytest.raises(PsbtRefusedError, match=r"fee rate 709\.219 sat/vB is above the cap of 50\.000 sat/vB"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest", FeeCaps(max_fee_rate_msat_per_vb=50_000))


def test_refuses_change_that_does_not_derive() -> None:
    # The output's script is ours at /1/0 but the PSBT claims it is /1/5: the derivation proves nothing.
    psbt = build_psbt(SEED)
    from embit.psbt import DerivationPath

    from signer.hd import parse_path

    out = psbt.outputs[1]
    ((pub, _der),) = out.bip32_derivations.items()
    out.bip32_derivations[pub] = DerivationPath(bytes.fromhex(SEED.fingerprint), parse_path("m/84h/1h/0h/1/5"))
    with pytest.raises(PsbtRefusedError, match=r"claims to be change .* does not derive from this keystore"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_refuses_change_paid_to_a_foreign_key_under_our_fingerprint() -> None:
    other = UnlockedSeed(OTHER_MNEMONIC)
    psbt = build_psbt(SEED)
    # Replace the change output script by the other wallet's key, keeping our fingerprint/path claim.
    from embit import script

    psbt.outputs[1].script_pubkey = script.p2wpkh(root_key(other, "regtest").derive("m/84h/1h/0h/1/0"))
    with pytest.raises(PsbtRefusedError, match="does not derive from this keystore"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_output_claimed_by_another_fingerprint_is_shown_as_external() -> None:
    psbt = build_psbt(SEED, change_fingerprint="01020304")
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    assert [o.is_change for o in summary.outputs] == [False, False]
    assert summary.spend_sat == 40_000_000 + 59_990_000


def test_refuses_outputs_above_inputs_and_foreign_psbt() -> None:
    psbt = build_psbt(SEED, change_sat=70_000_000)
    with pytest.raises(PsbtRefusedError, match="exceed inputs"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    other = UnlockedSeed(OTHER_MNEMONIC)
    with pytest.raises(PsbtRefusedError, match="nothing to sign"):
        analyze(build_psbt(SEED), root_key(other, "regtest"), other.fingerprint, "regtest")


def test_refuses_mainnet_path_on_regtest() -> None:
    psbt = build_psbt(SEED, network="mainnet")
    with pytest.raises(PsbtRefusedError, match="not a regtest path"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")


def test_amount_changed_after_summary_is_refused_and_nothing_signed() -> None:
    psbt = build_psbt(SEED)
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    psbt.outputs[0].value -= 1_000_000  # e.g. a swap between display and signature
    with pytest.raises(PsbtRefusedError, match="changed after its summary"):
        sign_checked(psbt, ROOT, summary)
    assert not psbt.inputs[0].partial_sigs


def test_spent_amount_changed_after_summary_is_refused() -> None:
    from embit.transaction import TransactionOutput

    psbt = build_psbt(SEED, include_non_witness=False)
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest", require_non_witness_utxo=False)
    real = psbt.inputs[0].witness_utxo
    psbt.inputs[0].witness_utxo = TransactionOutput(real.value - 5, real.script_pubkey)
    with pytest.raises(PsbtRefusedError, match="changed after its summary"):
        sign_checked(psbt, ROOT, summary)


def test_garbage_and_base64_round_trip() -> None:
    with pytest.raises(PsbtRefusedError):
        parse_psbt(b"not a psbt at all")
    with pytest.raises(PsbtRefusedError):
        parse_psbt(b"psbt\xff\x01\x00")
    psbt = build_psbt(SEED)
    b64 = serialize_psbt(psbt, "base64")
    again, form = parse_psbt(b64)
    assert form == "base64" and serialize_psbt(again, "base64") == b64


def test_p2wpkh_without_previous_transaction_refused_unless_allowed() -> None:
    psbt = build_psbt(SEED, include_non_witness=False)
    with pytest.raises(PsbtRefusedError, match="lacks its previous transaction"):
        analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    assert analyze(psbt, ROOT, SEED.fingerprint, "regtest", require_non_witness_utxo=False).fee_sat == 10_000
    # P2TR commits to every spent amount (BIP341), so its witness UTXO alone is enough
    taproot = build_psbt(SEED, script_type="p2tr", include_non_witness=False)
    assert analyze(taproot, ROOT, SEED.fingerprint, "regtest").fee_sat == 10_000


def test_derivation_changed_after_summary_is_refused() -> None:
    from embit.psbt import DerivationPath

    from signer.hd import parse_path

    psbt = build_psbt(SEED)
    summary = analyze(psbt, ROOT, SEED.fingerprint, "regtest")
    ((pub, _),) = psbt.inputs[0].bip32_derivations.items()
    psbt.inputs[0].bip32_derivations[pub] = DerivationPath(bytes.fromhex(SEED.fingerprint),
                                                           parse_path("m/84h/1h/0h/0/1"))
    with pytest.raises(PsbtRefusedError, match="changed its derivation path"):
        sign_checked(psbt, ROOT, summary)
    psbt.inputs[0].bip32_derivations[pub] = DerivationPath(bytes.fromhex("01020304"), parse_path("m/84h/1h/0h/0/0"))
    with pytest.raises(PsbtRefusedError, match="no longer names this keystore"):
        sign_checked(psbt, ROOT, summary)
    assert not psbt.inputs[0].partial_sigs


INVALID = json.loads((Path(__file__).parents[1] / "vectors" / "bip174_invalid.json").read_text())["invalid"]


@pytest.mark.parametrize("vector", INVALID, ids=[v["case"] for v in INVALID])
@pytest.mark.parametrize("form", ["binary", "base64"])
def test_bip174_invalid_psbts_are_refused(vector: dict[str, str], form: str) -> None:
    import base64

    raw = bytes.fromhex(vector["hex"])
    with pytest.raises(PsbtRefusedError):
        parse_psbt(raw if form == "binary" else base64.b64encode(raw))
