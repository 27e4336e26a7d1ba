"""`coffer-signer` end to end (in-process): init, xpub, sign, sign-eth, and every refusal writes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from signer.cold_cli import main
from signer.keystore import UnlockedSeed
from tests.signer.helpers import MNEMONIC, PASSPHRASE, build_psbt, make_keystore

SEED = UnlockedSeed(MNEMONIC)


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ks.json"
    make_keystore(path)
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", PASSPHRASE)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def refused(rc: int, err: str, out_file: Path, needle: str) -> None:
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coffer-signer: error: "), err
    assert needle in lines[0], lines[0]
    assert not out_file.exists()
    assert not list(out_file.parent.glob(f".{out_file.name}.*"))  # no temp file left behind


def test_init_import_and_xpub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    words = tmp_path / "words.txt"
    words.write_text(MNEMONIC + "\n")
    pw = tmp_path / "pw.txt"
    pw.write_text("from a file\n")
    monkeypatch.delenv("COFFER_SIGNER_PASSPHRASE", raising=False)
    ks = tmp_path / "ks.json"
    rc, out, _ = run(capsys, "init", "--keystore", str(ks), "--mnemonic-file", str(words),
                     "--passphrase-file", str(pw), "--scrypt-n", "1024")
    assert rc == 0 and "fingerprint 73c5da0a" in out and "abandon" not in out
    rc, out, _ = run(capsys, "xpub", "--keystore", str(ks), "--passphrase-file", str(pw),
                     "--chain", "btc", "--network", "mainnet")
    lines = out.splitlines()
    assert lines[0].startswith("zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868")
    assert "key origin: [73c5da0a/84h/0h/0h]" in lines
    assert any(line.startswith("descriptor: wpkh([73c5da0a/84h/0h/0h]xpub") for line in lines)
    rc, out, _ = run(capsys, "xpub", "--keystore", str(ks), "--passphrase-file", str(pw),
                     "--chain", "eth", "--network", "mainnet", "--account", "2")
    assert out.splitlines()[0].startswith("xpub") and "[73c5da0a/44h/60h/2h]" in out
    rc, out, _ = run(capsys, "xpub", "--keystore", str(ks), "--passphrase-file", str(pw),
                     "--chain", "btc", "--network", "testnet", "--type", "p2tr")
    assert out.splitlines()[0].startswith("tpub") and "tr([73c5da0a/86h/1h/0h]tpub" in out


def test_init_new_mnemonic_shown_once(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new.json"
    rc, out, _ = run(capsys, "init", "--keystore", str(new), "--words", "12", "--scrypt-n", "1024")
    assert rc == 0
    shown = [tok.split(".", 1)[1] for line in out.splitlines() if line.startswith("  ") for tok in line.split()]
    assert len(shown) == 12
    fingerprint = json.loads(new.read_text())["fingerprint"]
    assert UnlockedSeed(" ".join(shown)).fingerprint == fingerprint
    rc, _, err = run(capsys, "init", "--keystore", str(new), "--scrypt-n", "1024")
    assert rc == 1 and "already exists" in err


def test_sign_happy_path_base64_and_binary(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embit.psbt import PSBT

    psbt = build_psbt(SEED)
    src = tmp_path / "unsigned.psbt"
    src.write_text(psbt.to_base64())
    out = tmp_path / "signed.psbt"
    rc, text, err = run(capsys, "sign", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes")
    assert rc == 0, err
    assert "inferred" not in err and "testnet" in text  # inferred from coin type 1'
    assert "CHANGE (verified m/84h/1h/0h/1/0)" in text and "fee: 10000 sat" in text
    signed = PSBT.from_base64(out.read_text().strip())
    assert len(signed.inputs[0].partial_sigs) == 1
    # binary in -> binary out, with an explicit network
    src_bin = tmp_path / "unsigned.bin"
    src_bin.write_bytes(psbt.serialize())
    out_bin = tmp_path / "signed.bin"
    rc, text, _ = run(capsys, "sign", "--keystore", str(ks), "--in", str(src_bin), "--out", str(out_bin),
                      "--yes", "--network", "regtest")
    assert rc == 0 and "bcrt1q" in text
    assert out_bin.read_bytes().startswith(b"psbt\xff")
    assert PSBT.parse(out_bin.read_bytes()).serialize() == signed.serialize()  # deterministic RFC6979


def _write(tmp_path: Path, psbt: Any) -> Path:
    src = tmp_path / f"in-{len(list(tmp_path.glob('in-*.psbt')))}.psbt"
    src.write_text(psbt.to_base64())
    return src


def test_sign_refusals_write_nothing(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from embit.transaction import TransactionOutput

    out = tmp_path / "out.psbt"
    good = _write(tmp_path, build_psbt(SEED))
    base = ["sign", "--keystore", str(ks), "--out", str(out), "--yes"]

    # wrong passphrase
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", "wrong")
    rc, _, err = run(capsys, *base, "--in", str(good))
    refused(rc, err, out, "wrong passphrase")
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", PASSPHRASE)

    # corrupted keystore
    bad_ks = tmp_path / "bad.json"
    doc = json.loads(ks.read_text())
    doc["ciphertext"] = doc["ciphertext"][:-2] + ("00" if doc["ciphertext"][-2:] != "00" else "01")
    bad_ks.write_text(json.dumps(doc))
    rc, _, err = run(capsys, "sign", "--keystore", str(bad_ks), "--out", str(out), "--yes", "--in", str(good))
    refused(rc, err, out, "tampered")

    # tampered PSBT: an amount edited so the UTXO data no longer agrees
    psbt = build_psbt(SEED)
    real = psbt.inputs[0].witness_utxo
    psbt.inputs[0].witness_utxo = TransactionOutput(real.value + 1, real.script_pubkey)
    rc, _, err = run(capsys, *base, "--in", str(_write(tmp_path, psbt)))
    refused(rc, err, out, "contradicts the non-witness UTXO")

    # tampered PSBT: an output amount lowered so the fee becomes absurd
    psbt = build_psbt(SEED)
    psbt.outputs[1].value -= 20_000_000
    rc, _, err = run(capsys, *base, "--in", str(_write(tmp_path, psbt)))
    refused(rc, err, out, "above the cap")

    # change that does not derive from this keystore
    psbt = build_psbt(SEED)
    from embit.psbt import DerivationPath

    from signer.hd import parse_path

    ((pub, _),) = psbt.outputs[1].bip32_derivations.items()
    psbt.outputs[1].bip32_derivations[pub] = DerivationPath(bytes.fromhex(SEED.fingerprint),
                                                            parse_path("m/84h/1h/0h/1/9"))
    rc, _, err = run(capsys, *base, "--in", str(_write(tmp_path, psbt)))
    refused(rc, err, out, "does not derive from this keystore")

    # fee above a configured cap
    rc, _, err = run(capsys, *base, "--in", str(good), "--max-fee-sat", "5000")
    refused(rc, err, out, "above the cap of 5000 sat")
    rc, _, err = run(capsys, *base, "--in", str(good), "--max-fee-rate", "10.5")
    refused(rc, err, out, "above the cap of 10.500 sat/vB")

    # not a PSBT; no confirmation without a terminal
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    rc, _, err = run(capsys, *base, "--in", str(junk))
    refused(rc, err, out, "PSBT")
    rc, _, err = run(capsys, "sign", "--keystore", str(ks), "--out", str(out), "--in", str(good))
    refused(rc, err, out, "confirmation needed")

    # a P2WPKH input without its previous transaction, unless explicitly allowed
    thin = _write(tmp_path, build_psbt(SEED, include_non_witness=False))
    rc, _, err = run(capsys, *base, "--in", str(thin))
    refused(rc, err, out, "lacks its previous transaction")
    rc, _, err = run(capsys, *base, "--in", str(thin), "--allow-witness-utxo-only")
    assert rc == 0 and out.exists()


def test_existing_out_file_untouched_on_refusal(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.psbt"
    out.write_text("previous content")
    psbt = build_psbt(SEED, change_sat=10_000_000)
    rc, _, _ = run(capsys, "sign", "--keystore", str(ks), "--in", str(_write(tmp_path, psbt)),
                   "--out", str(out), "--yes")
    assert rc == 1 and out.read_text() == "previous content"


ETH_TX = {
    "type": 2, "chain_id": 1337, "nonce": 7, "to": "0x3535353535353535353535353535353535353535",
    "value": "1230000000000000000", "gas": 21000, "max_fee_per_gas": "40000000000",
    "max_priority_fee_per_gas": 1500000000, "data": "0x", "derivation_path": "m/44'/60'/0'/0/0",
}


def test_sign_eth_1559_equals_eth_account(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eth_account import Account

    from signer.eth_sign import derive_eth_key
    from signer.hd import root_key

    src = tmp_path / "tx.json"
    src.write_text(json.dumps(ETH_TX))
    out = tmp_path / "tx.hex"
    rc, text, err = run(capsys, "sign-eth", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes")
    assert rc == 0, err
    assert "to    0x3535353535353535353535353535353535353535" in text
    assert "value 1.230000000000000000 ETH" in text and "chain id 1337" in text
    assert "max fee 0.000840000000000000 ETH" in text
    assert "0x9858EfFD232B4033E47d90003D41EC34EcaEda94" in text
    key = derive_eth_key(root_key(SEED, "mainnet"), "m/44'/60'/0'/0/0")
    expected = Account.sign_transaction(
        {"type": 2, "chainId": 1337, "nonce": 7, "to": ETH_TX["to"], "value": 1230000000000000000, "gas": 21000,
         "maxFeePerGas": 40000000000, "maxPriorityFeePerGas": 1500000000, "data": b""},
        key,
    )
    assert out.read_text().strip() == "0x" + bytes(expected.raw_transaction).hex()
    assert f"transaction hash: 0x{bytes(expected.hash).hex()}" in text
    assert Account.recover_transaction(out.read_text().strip()) == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"


def test_sign_eth_legacy_via_cli(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from eth_account import Account

    tx = {"type": 0, "chain_id": 5, "nonce": 0, "to": "0x3535353535353535353535353535353535353535",
          "value": 1, "gas": 21000, "gas_price": "20000000000", "data": "0xdeadbeef",
          "derivation_path": "m/44'/60'/0'/0/1"}
    src = tmp_path / "tx.json"
    src.write_text(json.dumps(tx))
    out = tmp_path / "tx.hex"
    rc, _, err = run(capsys, "sign-eth", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes")
    assert rc == 0, err
    raw = out.read_text().strip()
    assert raw.startswith("0xf8")  # legacy RLP list, no type byte
    from signer.eth_sign import address_of, derive_eth_key
    from signer.hd import root_key

    key = derive_eth_key(root_key(SEED, "mainnet"), "m/44'/60'/0'/0/1")
    assert Account.recover_transaction(raw) == address_of(key)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"value": 1.5}, "not floats"),
        ({"to": "0x9858EFFD232B4033E47d90003D41EC34EcaEda94"}, "checksum"),
        ({"max_fee_per_gas": str(10**13)}, "above the cap"),
        ({"type": 1}, "'type' must be 2"),
        ({"chain_id": 0}, "chain_id"),
        ({"derivation_path": "m/84'/0'/0'/0/0"}, "derivation_path"),
        ({"extra": 1}, "unknown field"),
        ({"max_priority_fee_per_gas": str(10**12)}, "above 'max_fee_per_gas'"),
    ],
)
def test_sign_eth_refusals(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str],
                           change: dict[str, Any], needle: str) -> None:
    src = tmp_path / "tx.json"
    src.write_text(json.dumps({**ETH_TX, **change}))
    out = tmp_path / "tx.hex"
    rc, _, err = run(capsys, "sign-eth", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes")
    refused(rc, err, out, needle)


def test_base64_output_is_valid(tmp_path: Path, ks: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write(tmp_path, build_psbt(SEED, script_type="p2tr"))
    out = tmp_path / "o.psbt"
    rc, _, err = run(capsys, "sign", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes")
    assert rc == 0, err
    assert base64.b64decode(out.read_text().strip()).startswith(b"psbt\xff")
