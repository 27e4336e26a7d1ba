"""Transactions signed by `coffer-signer` are accepted by the project's real test chains:
the Esplora-compatible regtest chain script-verifies P2WPKH (BIP143) and P2TR key-path
(its own BIP341 sighash) spends, and the eth-tester EVM accepts EIP-1559 and EIP-155 transactions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer.cold_cli import main
from signer.hd import embit_network, parse_path, root_key
from signer.keystore import UnlockedSeed
from tests.signer.helpers import MNEMONIC, PASSPHRASE, make_keystore

SEED = UnlockedSeed(MNEMONIC)
NET = "regtest"


@pytest.fixture
def ks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ks.json"
    make_keystore(path)
    monkeypatch.setenv("COFFER_SIGNER_PASSPHRASE", PASSPHRASE)
    return path


def _psbt_spending(prev_hex: str, script_type: str, index: int, fee_sat: int) -> tuple[Any, int]:
    from embit import script
    from embit.psbt import PSBT, DerivationPath
    from embit.transaction import Transaction, TransactionInput, TransactionOutput

    purpose = 84 if script_type == "p2wpkh" else 86
    root = root_key(SEED, NET)
    fp = bytes.fromhex(SEED.fingerprint)
    path = parse_path(f"m/{purpose}h/1h/0h/0/{index}")
    key = root.derive(path)
    spk = script.p2wpkh(key) if script_type == "p2wpkh" else script.p2tr(key)
    prev = Transaction.parse(bytes.fromhex(prev_hex))
    vout = next(i for i, out in enumerate(prev.vout) if out.script_pubkey == spk)
    value = prev.vout[vout].value
    change_path = parse_path(f"m/{purpose}h/1h/0h/1/{index}")
    change_key = root.derive(change_path)
    change_spk = script.p2wpkh(change_key) if script_type == "p2wpkh" else script.p2tr(change_key)
    external = script.address_to_scriptpubkey("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    send = value // 3
    tx = Transaction(version=2, vin=[TransactionInput(prev.txid(), vout, sequence=0xFFFFFFFD)],
                     vout=[TransactionOutput(send, external), TransactionOutput(value - send - fee_sat, change_spk)])
    psbt = PSBT(tx)
    psbt.inputs[0].witness_utxo = prev.vout[vout]
    psbt.inputs[0].non_witness_utxo = prev
    if script_type == "p2wpkh":
        psbt.inputs[0].bip32_derivations[key.get_public_key()] = DerivationPath(fp, path)
        psbt.outputs[1].bip32_derivations[change_key.get_public_key()] = DerivationPath(fp, change_path)
    else:
        psbt.inputs[0].taproot_bip32_derivations[key.get_public_key()] = ([], DerivationPath(fp, path))
        psbt.outputs[1].taproot_bip32_derivations[change_key.get_public_key()] = ([], DerivationPath(fp, change_path))
    return psbt, send


@pytest.mark.parametrize(("script_type", "index"), [("p2wpkh", 11), ("p2tr", 12)])
def test_btc_spend_signed_by_cli_is_accepted_by_regtest_chain(
    btc_chain: Any, ks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], script_type: str, index: int
) -> None:
    from embit import script
    from embit.finalizer import finalize_psbt
    from embit.psbt import PSBT

    purpose = 84 if script_type == "p2wpkh" else 86
    key = root_key(SEED, NET).derive(f"m/{purpose}h/1h/0h/0/{index}")
    address = (script.p2wpkh(key) if script_type == "p2wpkh" else script.p2tr(key)).address(embit_network(NET))
    funding_txid = btc_chain.faucet(address, 2_000_000)
    btc_chain.mine(1)
    prev_hex = btc_chain.get(f"/tx/{funding_txid}/hex").text.strip()
    psbt, _send = _psbt_spending(prev_hex, script_type, index, fee_sat=500)
    src, out = tmp_path / "u.psbt", tmp_path / "s.psbt"
    src.write_text(psbt.to_base64())
    rc = main(["sign", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes", "--network", NET])
    _text, err = capsys.readouterr()
    assert rc == 0, err
    signed = PSBT.from_base64(out.read_text().strip())
    final = finalize_psbt(signed)
    assert final is not None
    raw = final.serialize().hex()

    # a corrupted signature is rejected by the chain (its verification is real)
    bad = bytearray(final.serialize())
    witness_sig_offset = bytes(bad).find(bytes(final.vin[0].witness.items[0]))
    bad[witness_sig_offset + 10] ^= 0x01
    rejected = btc_chain.post("/tx", bytes(bad).hex())
    assert rejected.status_code == 400

    accepted = btc_chain.post("/tx", raw)
    assert accepted.status_code == 200, accepted.text
    assert accepted.text.strip() == final.txid().hex()
    btc_chain.mine(1)
    assert btc_chain.get(f"/tx/{final.txid().hex()}/status").json()["confirmed"] is True


@pytest.mark.parametrize("tx_type", [2, 0])
def test_eth_tx_signed_by_cli_is_mined(
    eth_chain: Any, ks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tx_type: int
) -> None:
    from signer.eth_sign import address_of, derive_eth_key

    path = f"m/44'/60'/0'/0/{20 + tx_type}"
    sender = address_of(derive_eth_key(root_key(SEED, "mainnet"), path))
    eth_chain.fund(sender, 10**18)
    eth_chain.mine(1)
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    nonce = int(eth_chain.rpc("eth_getTransactionCount", sender, "pending"), 16)
    base = {"type": tx_type, "chain_id": chain_id, "nonce": nonce, "to": "0x3535353535353535353535353535353535353535",
            "value": str(12345 + tx_type), "gas": 21000, "data": "0x", "derivation_path": path}
    if tx_type == 2:
        base.update(max_fee_per_gas=str(50 * 10**9), max_priority_fee_per_gas=str(10**9))
    else:
        base.update(gas_price=str(50 * 10**9))
    src, out = tmp_path / "tx.json", tmp_path / "tx.hex"
    src.write_text(json.dumps(base))
    rc = main(["sign-eth", "--keystore", str(ks), "--in", str(src), "--out", str(out), "--yes"])
    text, err = capsys.readouterr()
    assert rc == 0, err
    txid = eth_chain.rpc("eth_sendRawTransaction", out.read_text().strip())
    assert f"transaction hash: {txid}" in text
    eth_chain.mine(1)
    receipt = eth_chain.rpc("eth_getTransactionReceipt", txid)
    assert int(receipt["status"], 16) == 1
    assert receipt["from"].lower() == sender.lower()
    balance = int(eth_chain.rpc("eth_getBalance", "0x3535353535353535353535353535353535353535", "latest"), 16)
    assert balance >= 12345
