"""The local Bitcoin regtest chain (`coffer chain btc`) over real HTTP, as an Esplora client sees it:
faucet payments are signed, verified and mined; bad signatures, missing and spent inputs are refused;
P2TR key-path spends verify; reorgs replace the tip blocks; injected 429s are answered. The input
verifier is checked against the BIP143 and BIP341 published vectors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PrivateKey
from embit import ec
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from tests.chain_fixtures import BtcChain
from watchers.testchains.btc_verify import hash160, taproot_sighash, verify_input
from watchers.testchains.errors import TxRejectedError
from watchers.testchains.regtest_chain import merkle_root, script_address, sha256d

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


class P2wpkhKey:
    def __init__(self, seed: bytes) -> None:
        self.key = PrivateKey(hashlib.sha256(seed).digest())
        self.pubkey = self.key.public_key.format(compressed=True)
        self.script = b"\x00\x14" + hash160(self.pubkey)
        self.address = str(script_address(self.script))

    def sign(self, tx: Any, index: int, value_sat: int) -> None:
        code = Script(b"\x76\xa9\x14" + self.script[2:] + b"\x88\xac")
        der = self.key.sign(tx.sighash_segwit(index, code, value_sat, SIGHASH.ALL), hasher=None)
        tx.vin[index].witness = Witness([der + bytes([SIGHASH.ALL]), self.pubkey])


class P2trKey:
    """A BIP86-style key-path-only taproot output (internal key tweaked with an empty script tree)."""

    def __init__(self, seed: bytes) -> None:
        tweaked = ec.PrivateKey(hashlib.sha256(seed).digest()).taproot_tweak(b"")
        self.key = PrivateKey(tweaked.secret)
        self.script = b"\x51\x20" + tweaked.get_public_key().xonly()
        self.address = str(script_address(self.script))


def _utxo(btc_chain: BtcChain, txid: str, address: str) -> tuple[int, int]:
    tx = btc_chain.get(f"/tx/{txid}").json()
    for n, out in enumerate(tx["vout"]):
        if out.get("scriptpubkey_address") == address:
            return n, int(out["value"])
    raise AssertionError("no output to that address")


def _spend(txid: str, vout: int, to_script: bytes, value_sat: int) -> Any:
    return Transaction(version=2, vin=[TransactionInput(bytes.fromhex(txid), vout, sequence=0xFFFFFFFD)],
                       vout=[TransactionOutput(value_sat, Script(to_script))], locktime=0)


def _post_tx(btc_chain: BtcChain, tx: Any) -> Any:
    return btc_chain.post("/tx", bytes(tx.serialize()).hex())


def test_faucet_tx_is_verified_mined_and_served_like_esplora(btc_chain: BtcChain) -> None:
    import bdkpython as bdk

    user = P2wpkhKey(b"faucet-user")
    txid = btc_chain.faucet(user.address, 1_234_567)
    tx = btc_chain.get(f"/tx/{txid}").json()
    assert tx["status"] == {"confirmed": False}
    assert txid in btc_chain.get("/mempool/txids").json()
    vout, value = _utxo(btc_chain, txid, user.address)
    assert value == 1_234_567 and tx["vout"][vout]["scriptpubkey_type"] == "v0_p2wpkh"
    assert tx["fee"] > 0 and tx["vin"][0]["prevout"]["scriptpubkey_type"] == "v0_p2wpkh"
    raw = btc_chain.get(f"/tx/{txid}/hex").text
    assert str(bdk.Transaction(bytes.fromhex(raw)).compute_txid()) == txid  # independent parser agrees
    height = btc_chain.tip_height()
    (block_hash,) = btc_chain.mine(1)
    assert btc_chain.tip_height() == height + 1
    assert btc_chain.get("/blocks/tip/hash").text == block_hash
    assert btc_chain.get(f"/block-height/{height + 1}").text == block_hash
    status = btc_chain.get(f"/tx/{txid}/status").json()
    assert status["confirmed"] is True and status["block_hash"] == block_hash and status["block_height"] == height + 1
    txids = btc_chain.get(f"/block/{block_hash}/txids").json()
    assert txids[1:] == [txid]
    # The header is real: hash = sha256d(header), merkle root over the txids, previous hash links.
    block = btc_chain.get(f"/block/{block_hash}").json()
    header = bytes.fromhex(btc_chain.get(f"/block/{block_hash}/header").text)
    assert sha256d(header)[::-1].hex() == block_hash
    assert header[4:36][::-1].hex() == block["previousblockhash"] == btc_chain.get(f"/block-height/{height}").text
    assert merkle_root([bytes.fromhex(t)[::-1] for t in txids])[::-1].hex() == block["merkle_root"]
    assert block["tx_count"] == 2 and block["height"] == height + 1
    coinbase = btc_chain.get(f"/block/{block_hash}/txs/0").json()[0]
    assert coinbase["vin"][0]["is_coinbase"] is True
    assert btc_chain.get(f"/block/{block_hash}/status").json() == {"in_best_chain": True, "height": height + 1,
                                                                   "next_best": None}
    utxos = btc_chain.get(f"/address/{user.address}/utxo").json()
    assert [(u["txid"], u["vout"], u["value"]) for u in utxos] == [(txid, vout, 1_234_567)]
    assert utxos[0]["status"]["confirmed"] is True
    assert [t["txid"] for t in btc_chain.get(f"/address/{user.address}/txs").json()] == [txid]
    assert btc_chain.get(f"/tx/{txid}/outspend/{vout}").json() == {"spent": False}
    assert set(btc_chain.get("/fee-estimates").json()) >= {"1", "6", "144"}


def test_signed_spend_accepted_bad_signature_missing_and_spent_inputs_refused(btc_chain: BtcChain) -> None:
    alice, bob = P2wpkhKey(b"alice"), P2wpkhKey(b"bob")
    funding = btc_chain.faucet(alice.address, 500_000)
    vout, value = _utxo(btc_chain, funding, alice.address)
    btc_chain.mine(1)
    # A signature over other outputs than the transaction's: refused.
    forged = _spend(funding, vout, bob.script, value - 1_000)
    alice.sign(forged, 0, value)
    forged.vout[0].value = value - 500
    answer = _post_tx(btc_chain, forged)
    assert answer.status_code == 400 and "mandatory-script-verify-flag-failed" in answer.text
    # Signed by the wrong key: refused.
    wrong = _spend(funding, vout, bob.script, value - 1_000)
    bob.sign(wrong, 0, value)
    answer = _post_tx(btc_chain, wrong)
    assert answer.status_code == 400 and "mandatory-script-verify-flag-failed" in answer.text
    # Signed with the wrong amount (BIP143 commits to the value): refused.
    bad_amount = _spend(funding, vout, bob.script, value - 1_000)
    alice.sign(bad_amount, 0, value + 1)
    assert _post_tx(btc_chain, bad_amount).status_code == 400
    # A missing output: refused.
    missing = _spend("ab" * 32, 0, bob.script, 1_000)
    alice.sign(missing, 0, 2_000)
    answer = _post_tx(btc_chain, missing)
    assert answer.status_code == 400 and "bad-txns-inputs-missingorspent" in answer.text
    # Spending more than the input: refused.
    greedy = _spend(funding, vout, bob.script, value + 1)
    alice.sign(greedy, 0, value)
    assert "bad-txns-in-belowout" in _post_tx(btc_chain, greedy).text
    # The honest spend is accepted, with the txid Esplora returns.
    good = _spend(funding, vout, bob.script, value - 1_000)
    alice.sign(good, 0, value)
    answer = _post_tx(btc_chain, good)
    assert answer.status_code == 200 and answer.text == bytes(good.txid()).hex()
    # A second spend of the same output paying no more fee while the first is in the mempool: refused.
    double = _spend(funding, vout, alice.script, value - 1_050)
    alice.sign(double, 0, value)
    answer = _post_tx(btc_chain, double)
    assert answer.status_code == 400 and "insufficient fee" in answer.text
    btc_chain.mine(1)
    spent = btc_chain.get(f"/tx/{funding}/outspend/{vout}").json()
    assert spent["spent"] is True and spent["txid"] == answer_txid(good) and spent["status"]["confirmed"] is True
    # ... and once mined, the output is spent for good.
    answer = _post_tx(btc_chain, double)
    assert answer.status_code == 400 and "bad-txns-inputs-missingorspent" in answer.text
    assert btc_chain.post("/tx", "00zz").status_code == 400


def answer_txid(tx: Any) -> str:
    return bytes(tx.txid()).hex()


def test_fee_bump_replaces_a_mempool_tx_and_its_children(btc_chain: BtcChain) -> None:
    alice, bob, carol = P2wpkhKey(b"rbf-alice"), P2wpkhKey(b"rbf-bob"), P2wpkhKey(b"rbf-carol")
    funding = btc_chain.faucet(alice.address, 400_000)
    vout, value = _utxo(btc_chain, funding, alice.address)
    btc_chain.mine(1)
    first = _spend(funding, vout, bob.script, value - 500)
    alice.sign(first, 0, value)
    assert _post_tx(btc_chain, first).status_code == 200
    child = _spend(answer_txid(first), 0, carol.script, value - 1_000)  # bob spends the unconfirmed output
    bob.sign(child, 0, value - 500)
    assert _post_tx(btc_chain, child).status_code == 200
    # A replacement must pay for the evicted tx and its child plus its own relay fee: 1,000 is not enough.
    cheap = _spend(funding, vout, alice.script, value - 1_000)
    alice.sign(cheap, 0, value)
    assert "insufficient fee" in _post_tx(btc_chain, cheap).text
    bump = _spend(funding, vout, alice.script, value - 2_000)
    alice.sign(bump, 0, value)
    answer = _post_tx(btc_chain, bump)
    assert answer.status_code == 200, answer.text
    pool = btc_chain.get("/mempool/txids").json()
    assert answer.text in pool and answer_txid(first) not in pool and answer_txid(child) not in pool
    assert btc_chain.get(f"/tx/{answer_txid(first)}").status_code == 404
    btc_chain.mine(1)
    assert btc_chain.get(f"/tx/{answer.text}/status").json()["confirmed"] is True
    assert btc_chain.get(f"/address/{carol.address}/utxo").json() == []


def test_p2tr_key_path_spend_verifies(btc_chain: BtcChain) -> None:
    tr = P2trKey(b"taproot-user")
    assert tr.address.startswith("bcrt1p")
    funding = btc_chain.faucet(tr.address, 300_000)
    vout, value = _utxo(btc_chain, funding, tr.address)
    btc_chain.mine(1)
    dest = P2wpkhKey(b"taproot-dest")
    spend = _spend(funding, vout, dest.script, value - 800)
    msg = taproot_sighash(spend, 0, [tr.script], [value], SIGHASH.DEFAULT)
    # A signature by the untweaked internal key is not valid for the output key.
    spend.vin[0].witness = Witness([PrivateKey(hashlib.sha256(b"taproot-user").digest()).sign_schnorr(msg)])
    answer = _post_tx(btc_chain, spend)
    assert answer.status_code == 400 and "Invalid Schnorr signature" in answer.text
    spend.vin[0].witness = Witness([tr.key.sign_schnorr(msg)])
    answer = _post_tx(btc_chain, spend)
    assert answer.status_code == 200, answer.text
    (block_hash,) = btc_chain.mine(1)
    assert btc_chain.get(f"/tx/{answer.text}/status").json()["block_hash"] == block_hash
    assert btc_chain.get(f"/tx/{answer.text}").json()["vin"][0]["prevout"]["scriptpubkey_type"] == "v1_p2tr"


def test_reorg_replaces_tip_blocks_and_drops_or_remines_txs(btc_chain: BtcChain) -> None:
    kept_user, dropped_user = P2wpkhKey(b"reorg-kept"), P2wpkhKey(b"reorg-dropped")
    kept = btc_chain.faucet(kept_user.address, 100_000)
    dropped = btc_chain.faucet(dropped_user.address, 200_000)
    old = btc_chain.mine(3)
    top = btc_chain.tip_height()
    new = btc_chain.reorg(3, 4, drop_txids=[dropped])
    assert len(new) == 4 and btc_chain.tip_height() == top + 1
    for i, old_hash in enumerate(old):
        assert btc_chain.get(f"/block-height/{top - 2 + i}").text == new[i] != old_hash
        assert btc_chain.get(f"/block/{old_hash}/status").json() == {"in_best_chain": False}
    assert btc_chain.get(f"/block/{new[0]}").json()["previousblockhash"] == btc_chain.get(
        f"/block-height/{top - 3}").text
    assert btc_chain.get(f"/tx/{kept}/status").json()["block_hash"] == new[0]
    assert btc_chain.get(f"/tx/{dropped}").status_code == 404
    assert btc_chain.get(f"/address/{dropped_user.address}/utxo").json() == []
    assert len(btc_chain.get(f"/address/{kept_user.address}/utxo").json()) == 1


def test_injected_429_then_normal_answers(btc_chain: BtcChain) -> None:
    btc_chain.faults(2, status=429)
    first = btc_chain.get("/blocks/tip/height")
    second = btc_chain.get("/blocks/tip/hash")
    third = btc_chain.get("/blocks/tip/height")
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert int(third.text) == btc_chain.tip_height()
    btc_chain.faults(1, status=503)
    assert btc_chain.get("/fee-estimates").status_code == 503
    btc_chain.faults(1, status=None, delay_ms=50)
    assert btc_chain.get("/blocks/tip/height").status_code == 200


def test_block_txs_and_address_history_paginate_by_25(btc_chain: BtcChain) -> None:
    payee = P2wpkhKey(b"many-payments")
    txids = [btc_chain.faucet(payee.address, 10_000 + i) for i in range(30)]
    (block_hash,) = btc_chain.mine(1)
    first = btc_chain.get(f"/block/{block_hash}/txs/0").json()
    second = btc_chain.get(f"/block/{block_hash}/txs/25").json()
    assert len(first) == 25 and len(second) == 6
    assert [t["txid"] for t in first[1:] + second] == txids
    assert btc_chain.get(f"/block/{block_hash}/txs/5").status_code == 400
    page1 = btc_chain.get(f"/address/{payee.address}/txs").json()
    assert len(page1) == 25
    page2 = btc_chain.get(f"/address/{payee.address}/txs/chain/{page1[-1]['txid']}").json()
    assert len(page2) == 5
    assert {t["txid"] for t in page1 + page2} == set(txids)


def test_verifier_matches_bip143_p2wpkh_vector() -> None:
    vector = json.loads((VECTORS / "bip143_native_p2wpkh.json").read_text())
    tx = Transaction.parse(bytes.fromhex(vector["signed_tx"]))
    scripts = [bytes.fromhex(p["script_pubkey"]) for p in vector["prevouts"]]
    values = [p["value_sat"] for p in vector["prevouts"]]
    index = vector["p2wpkh_input_index"]
    code = Script(b"\x76\xa9\x14" + scripts[index][2:] + b"\x88\xac")
    assert tx.sighash_segwit(index, code, values[index], SIGHASH.ALL).hex() == vector["sighash"]
    verify_input(tx, index, scripts, values)
    with pytest.raises(TxRejectedError):
        verify_input(tx, index, scripts, [values[0], values[1] + 1])


def test_verifier_matches_bip341_key_path_vectors() -> None:
    vectors = json.loads((VECTORS / "bip86_bip341-wallet-test-vectors.json").read_text())["keyPathSpending"]
    checked = 0
    for case in vectors:
        utxos = case["given"]["utxosSpent"]
        scripts = [bytes.fromhex(u["scriptPubKey"]) for u in utxos]
        values = [int(u["amountSats"]) for u in utxos]
        tx = Transaction.parse(bytes.fromhex(case["auxiliary"]["fullySignedTx"]))
        for spending in case["inputSpending"]:
            index = spending["given"]["txinIndex"]
            hash_type = spending["given"]["hashType"]
            sighash = taproot_sighash(tx, index, scripts, values, hash_type)
            assert sighash.hex() == spending["intermediary"]["sigHash"]
            verify_input(tx, index, scripts, values)
            checked += 1
            tampered = list(values)
            tampered[index] += 1
            with pytest.raises(TxRejectedError):
                verify_input(tx, index, scripts, tampered)
    assert checked >= 5


@pytest.mark.parametrize("template", ["bip84", "bip86"])
def test_bdk_wallet_syncs_signs_and_broadcasts_through_our_esplora(btc_chain: BtcChain, template: str) -> None:
    """An independent Esplora client and signer (BDK, Rust): it scans our API, signs a P2WPKH or
    P2TR key-path spend itself, and our chain verifies and mines it."""
    import bdkpython as bdk

    secret = bdk.DescriptorSecretKey(bdk.NetworkKind.TEST, bdk.Mnemonic(bdk.WordCount.WORDS12), None)
    make = bdk.Descriptor.new_bip84 if template == "bip84" else bdk.Descriptor.new_bip86
    wallet = bdk.Wallet(make(secret, bdk.KeychainKind.EXTERNAL, bdk.NetworkKind.TEST),
                        make(secret, bdk.KeychainKind.INTERNAL, bdk.NetworkKind.TEST),
                        bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    address = str(wallet.reveal_next_address(bdk.KeychainKind.EXTERNAL).address)
    assert address.startswith("bcrt1q" if template == "bip84" else "bcrt1p")
    btc_chain.faucet(address, 1_000_000)
    btc_chain.mine(1)
    client = bdk.EsploraClient(btc_chain.url)
    wallet.apply_update(client.full_scan(wallet.start_full_scan().build(), 5, 1))
    assert wallet.balance().confirmed.to_sat() == 1_000_000
    payee = P2wpkhKey(b"bdk-payee-" + template.encode())
    psbt = bdk.TxBuilder().add_recipient(bdk.Script(payee.script), bdk.Amount.from_sat(400_000)).fee_rate(
        bdk.FeeRate.from_sat_per_vb(2)).finish(wallet)
    assert wallet.sign(psbt, None)
    tx = psbt.extract_tx()
    client.broadcast(tx)
    txid = str(tx.compute_txid())
    assert btc_chain.get(f"/tx/{txid}/status").json() == {"confirmed": False}
    btc_chain.mine(1)
    wallet.apply_update(client.sync(wallet.start_sync_with_revealed_spks().build(), 1))
    fee = wallet.calculate_fee(tx).to_sat()
    assert wallet.balance().confirmed.to_sat() == 1_000_000 - 400_000 - fee
    assert btc_chain.get(f"/tx/{txid}").json()["fee"] == fee
    assert [u["value"] for u in btc_chain.get(f"/address/{payee.address}/utxo").json()] == [400_000]
    # The same signed transaction cannot be accepted twice.
    assert btc_chain.post("/tx", bytes(tx.serialize()).hex()).status_code == 400
