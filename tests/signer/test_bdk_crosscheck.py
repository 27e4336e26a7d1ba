"""Cross-check with independent code: a PSBT built by bdkpython for a regtest wallet, signed by
`coffer-signer sign`, finalizes in bdk, and each signature verifies against a BIP143 sighash
computed by our test-only reference (itself checked against BIP143's own example)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from signer.cold_cli import main
from signer.hd import account_export
from signer.keystore import UnlockedSeed
from tests.signer.bip143_ref import bip143_parts, hash160, p2wpkh_sighash_all, parse_tx
from tests.signer.helpers import MNEMONIC, PASSPHRASE, funding_tx, make_keystore

VECTOR = json.loads((Path(__file__).parents[1] / "vectors" / "bip143_p2wpkh.json").read_text())


def test_reference_matches_bip143_example() -> None:
    from coincurve import PrivateKey, PublicKey

    tx = parse_tx(bytes.fromhex(VECTOR["unsigned_tx"]))
    prevouts, sequences, outputs = bip143_parts(tx)
    assert (prevouts.hex(), sequences.hex(), outputs.hex()) == (
        VECTOR["hash_prevouts"], VECTOR["hash_sequence"], VECTOR["hash_outputs"])
    pkh = bytes.fromhex(VECTOR["script_pubkey"])[2:]
    assert hash160(bytes.fromhex(VECTOR["public_key"])) == pkh
    sighash = p2wpkh_sighash_all(tx, VECTOR["input_index"], pkh, VECTOR["amount_sat"])
    assert sighash.hex() == VECTOR["sighash"]
    sig = bytes.fromhex(VECTOR["signature"])
    assert PublicKey(bytes.fromhex(VECTOR["public_key"])).verify(sig, sighash, hasher=None)
    # RFC6979 reproduces the BIP's signature exactly
    assert PrivateKey(bytes.fromhex(VECTOR["private_key"])).sign(sighash, hasher=None) == sig


@pytest.mark.parametrize("n_utxos", [1, 3])
def test_bdk_psbt_signed_by_cli_finalizes_and_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], n_utxos: int
) -> None:
    import bdkpython as bdk
    from coincurve import PublicKey
    from embit.script import Script

    seed = UnlockedSeed(MNEMONIC)
    ks = tmp_path / "ks.json"
    make_keystore(ks)
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", PASSPHRASE)

    export = account_export(seed, "btc", "regtest", 0, "p2wpkh")
    base = export.descriptor.split("#")[0]
    external = bdk.Descriptor(base.replace("<0;1>", "0"), bdk.NetworkKind.TEST)
    internal = bdk.Descriptor(base.replace("<0;1>", "1"), bdk.NetworkKind.TEST)
    wallet = bdk.Wallet(external, internal, bdk.Network.REGTEST, bdk.Persister.new_in_memory())

    # Fund the wallet with unconfirmed transactions paying its receive addresses.
    for i in range(n_utxos):
        addr = wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address
        spk = Script(bytes(addr.script_pubkey().to_bytes()))
        prev = funding_tx(spk, 30_000_000 + i, tag=i)
        wallet.apply_unconfirmed_txs([bdk.UnconfirmedTx(tx=bdk.Transaction(prev.serialize()), last_seen=1000 + i)])
    assert wallet.balance().total.to_sat() == sum(30_000_000 + i for i in range(n_utxos))

    dest = bdk.Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", bdk.Network.REGTEST)
    amount = 25_000_000 * n_utxos
    psbt = (
        bdk.TxBuilder()
        .add_recipient(dest.script_pubkey(), bdk.Amount.from_sat(amount))
        .fee_rate(bdk.FeeRate.from_sat_per_vb(3))
        .finish(wallet)
    )
    src = tmp_path / "unsigned.psbt"
    src.write_text(psbt.serialize())
    out = tmp_path / "signed.psbt"
    rc = main(["sign", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes", "--network", "regtest"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080" in text
    assert text.count("CHANGE (verified m/84h/1h/0h/1/") == 1  # bdk's change output is recognised
    assert f"signed {len(psbt.input())} input(s)" in text

    signed = bdk.Psbt(out.read_text().strip())
    assert wallet.finalize_psbt(signed) is True
    raw = bytes(signed.extract_tx().serialize())
    tx = parse_tx(raw)
    assert sum(v for v, spk in tx.outputs if v == amount) == amount
    # Verify every input's witness against an independent BIP143 sighash.
    utxos = {}
    for utxo in wallet.list_unspent():
        utxos[(bytes.fromhex(str(utxo.outpoint.txid))[::-1], utxo.outpoint.vout)] = utxo.txout.value.to_sat()
    assert len(tx.inputs) >= 1
    for index, (prev, vout, script_sig, _seq) in enumerate(tx.inputs):
        assert script_sig == b""
        sig, pub = tx.witnesses[index]
        assert sig[-1] == 1  # SIGHASH_ALL
        sighash = p2wpkh_sighash_all(tx, index, hash160(pub), utxos[(prev, vout)])
        assert PublicKey(pub).verify(sig[:-1], sighash, hasher=None)
        # and a wrong amount does not verify (the check can fail)
        wrong = p2wpkh_sighash_all(tx, index, hash160(pub), utxos[(prev, vout)] + 1)
        assert not PublicKey(pub).verify(sig[:-1], wrong, hasher=None)


def test_bdk_taproot_psbt_signed_by_cli_finalizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """P2TR key path: bdk accepts the signed PSBT and extracts a transaction with a 64-byte Schnorr witness.
    (The signature itself is verified by an independent BIP341 implementation in test_chain_broadcast.)"""
    import bdkpython as bdk
    from embit.script import Script

    seed = UnlockedSeed(MNEMONIC)
    ks = tmp_path / "ks.json"
    make_keystore(ks)
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", PASSPHRASE)
    base = account_export(seed, "btc", "regtest", 0, "p2tr").descriptor.split("#")[0]
    wallet = bdk.Wallet(bdk.Descriptor(base.replace("<0;1>", "0"), bdk.NetworkKind.TEST),
                        bdk.Descriptor(base.replace("<0;1>", "1"), bdk.NetworkKind.TEST),
                        bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    addr = wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address
    prev = funding_tx(Script(bytes(addr.script_pubkey().to_bytes())), 5_000_000)
    wallet.apply_unconfirmed_txs([bdk.UnconfirmedTx(tx=bdk.Transaction(prev.serialize()), last_seen=1)])
    dest = bdk.Address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", bdk.Network.REGTEST)
    psbt = (bdk.TxBuilder().add_recipient(dest.script_pubkey(), bdk.Amount.from_sat(1_000_000))
            .fee_rate(bdk.FeeRate.from_sat_per_vb(2)).finish(wallet))
    src, out = tmp_path / "u.psbt", tmp_path / "s.psbt"
    src.write_text(psbt.serialize())
    rc = main(["sign", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes", "--network", "regtest"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "CHANGE (verified m/86h/1h/0h/1/0)" in text
    signed = bdk.Psbt(out.read_text().strip())
    assert wallet.finalize_psbt(signed) is True
    tx = parse_tx(bytes(signed.extract_tx().serialize()))
    assert [len(w) for w in tx.witnesses] == [1] and len(tx.witnesses[0][0]) == 64
