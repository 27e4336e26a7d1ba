"""Sweeping on the local chains: Ethereum deposit addresses (ETH, and USDT after a gas top-up from
the hot address) end up in the hot address; hot BTC above its cap goes to a cold address through
the cold path (export, `coffer-signer sign`, import, broadcast, confirm). The ledger is untouched
(custody moves between our own addresses) and its audit stays clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import BtcApi, EthApi
from ledger.withdrawals_proc.cold import import_signed
from ledger.withdrawals_proc.eth_build import ERC20_TRANSFER_GAS, ETH_TRANSFER_GAS
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from ledger.withdrawals_proc.sweep import SweepConfig
from tests.signer.helpers import OTHER_MNEMONIC, PASSPHRASE, make_keystore
from tests.withdrawals import env as E
from tests.withdrawals.cli import run_cli


@pytest.mark.asyncio
async def test_eth_and_usdt_deposit_addresses_swept_to_hot(db_url: str, eth_chain: Any, tmp_path: Path) -> None:
    token = eth_chain.deploy_erc20()
    env = E.make_env(tmp_path, usdt_contract=token, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn, usdt_contract=token)
        a1 = await E.deposit_address(conn, env, 8, "ETH")
        a2 = await E.deposit_address(conn, env, 9, "USDT")
        eth_chain.fund(a1, 10**18)
        eth_chain.mint_erc20(token, a1, 300 * 10**6)
        eth_chain.mint_erc20(token, a2, 70 * 10**6)  # no ETH at all: needs gas from the hot address
        proc = Processor(pool, env.signer, ProcessorConfig(), btc=None, eth=eth,
                         sweep=SweepConfig(sweep_eth=True, eth_min_sweep_wei=10**15))
        hot = proc.keys.eth_hot_address
        eth_chain.fund(hot, 10**17)  # gas money for top-ups
        hot_before = await eth.balance_wei(hot)
        for _ in range(8):
            await proc.step()
            eth_chain.mine(1)
        await proc.step()

        assert await eth.token_balance(token, a1) == 0 and await eth.token_balance(token, a2) == 0
        assert await eth.token_balance(token, hot) == 370 * 10**6
        txs = await conn.fetch("SELECT * FROM wd_txs ORDER BY id")
        assert {t["state"] for t in txs} == {"confirmed"}
        kinds = sorted((t["purpose"], t["asset"], t["from_address"] == hot.lower()) for t in txs)
        # a1 pays its own token-sweep gas; a2 (no ETH) gets a top-up from the hot address first
        assert kinds == [("gas", "ETH", True), ("sweep", "ETH", False), ("sweep", "USDT", False),
                         ("sweep", "USDT", False)]
        # ETH left behind on a deposit address is at most the unused part of the sweep's gas budget
        for t in txs:
            if t["purpose"] == "sweep" and t["asset"] == "ETH":
                assert await eth.balance_wei(t["from_address"]) <= ETH_TRANSFER_GAS * int(t["fee_rate"])
        assert await eth.balance_wei(a2) <= ERC20_TRANSFER_GAS * max(int(t["fee_rate"]) for t in txs)
        swept = sum(int(t["amount_chain"]) for t in txs if t["purpose"] == "sweep" and t["asset"] == "ETH")
        topped = sum(int(t["amount_chain"]) for t in txs if t["purpose"] == "gas")
        hot_fees = sum(int(t["network_fee_chain"]) for t in txs if t["from_address"] == hot.lower())
        assert await eth.balance_wei(hot) == hot_before + swept - topped - hot_fees
        # nonces of every sender are gap-free from 0
        for sender in {t["from_address"] for t in txs}:
            nonces = sorted(int(t["nonce"]) for t in txs if t["from_address"] == sender)
            first = nonces[0]
            assert nonces == list(range(first, first + len(nonces)))
        assert await conn.fetchval("SELECT count(*) FROM balance_journal") == 0  # the ledger is untouched
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()


@pytest.mark.asyncio
async def test_hot_btc_above_cap_goes_to_cold_through_the_cold_path(db_url: str, btc_chain: Any,
                                                                     tmp_path: Path) -> None:
    env = E.make_env(tmp_path)
    cold_ks = tmp_path / "cold.keystore"
    make_keystore(cold_ks, OTHER_MNEMONIC)
    xpub = run_cli(["xpub", "--keystore", str(cold_ks), "--chain", "btc", "--network", "regtest"],
                   {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE}, module="signer.cold_cli")
    assert xpub.returncode == 0, xpub.stderr
    cold_xpub = xpub.stdout.splitlines()[0].strip()
    export = tmp_path / "export"
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    btc = BtcApi(btc_chain.url)
    try:
        await E.seed_assets(conn)
        address = await E.deposit_address(conn, env, 10, "BTC")
        for _ in range(3):
            btc_chain.faucet(address, 1_000_000)
        btc_chain.mine(1)
        proc = Processor(pool, env.signer, ProcessorConfig(export_dir=export), btc=btc, eth=None,
                         sweep=SweepConfig(hot_cap_btc_sat=2_000_000, cold_btc_xpub=cold_xpub))
        await proc.step()
        (tx,) = await conn.fetch("SELECT * FROM wd_txs WHERE chain = 'btc'")
        assert (tx["purpose"], tx["state"]) == ("cold", "unsigned")
        (file,) = export.glob("*.psbt")
        await proc.step()
        assert await conn.fetchval("SELECT count(*) FROM wd_txs WHERE chain = 'btc'") == 1  # one move at a time

        signed = tmp_path / "signed.psbt"
        sign = run_cli(["sign", "--keystore", str(env.keystore), "--in", str(file), "--out", str(signed), "--yes",
                        "--network", "regtest"], {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE}, module="signer.cold_cli")
        assert sign.returncode == 0, sign.stderr
        await import_signed(pool, signed.read_text())
        await proc.step()
        assert tx["txid"] in btc_chain.get("/mempool/txids").json()
        btc_chain.mine(2)
        await proc.step()
        final = await conn.fetchrow("SELECT * FROM wd_txs WHERE id = $1", tx["id"])
        assert final["state"] == "confirmed"
        from wallet.derive import open_account

        cold_address = open_account(cold_xpub, "btc", "regtest", "p2wpkh").address(0, 0)
        assert tx["destination"] == cold_address
        got = sum(u["value"] for u in btc_chain.get(f"/address/{cold_address}/utxo").json())
        assert got == int(tx["amount_chain"]) and got > 2_000_000 // 2
        change = [c["address"] for c in await conn.fetch("SELECT address FROM wd_btc_change")]
        hot_left = sum(u["value"] for a in [address, *change] for u in btc_chain.get(f"/address/{a}/utxo").json())
        assert hot_left == 3_000_000 - got - int(tx["fee_chain"]) and hot_left <= 2_000_000
    finally:
        await btc.aclose()
        await pool.close()
        await conn.close()
