"""Reorgs that drop a withdrawal's transaction: before its confirmations the processor re-broadcasts
the stored transaction (no rebuild, so no second payment) and settles once when it confirms again;
after settlement, a deeper reorg that drops it makes the processor re-broadcast it without touching
the ledger. Nothing is paid or settled twice; the audit stays clean."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import BtcApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.withdrawals import env as E

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@pytest.mark.asyncio
async def test_btc_reorg_drops_withdrawal(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path) -> None:
    env = E.make_env(tmp_path)
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    btc = BtcApi(btc_chain.url)
    try:
        await E.seed_assets(conn)
        address = await E.deposit_address(conn, env, 6, "BTC")
        funding = btc_chain.faucet(address, 2_000_000)
        btc_chain.mine(2)
        await E.credit(conn, user_id=6, asset="BTC", amount=2_000_000, txid=funding)
        w = await E.request_withdrawal(db_url, redis_url, user_id=6, asset="BTC", amount="0.003", address=DEST)
        proc = Processor(pool, env.signer, ProcessorConfig(), btc=btc, eth=None)
        await proc.step()
        tx = await conn.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        btc_chain.mine(1)
        await proc.step()
        assert btc_chain.get(f"/tx/{tx['txid']}/status").json()["confirmed"]

        # reorg: the block holding the withdrawal is replaced by one without it; the tx is gone
        btc_chain.reorg(1, 2, drop_txids=[tx["txid"]])
        assert btc_chain.get(f"/tx/{tx['txid']}/status").status_code == 404
        await proc.step()
        assert (await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"])) == "held"
        again = await conn.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        assert again["broadcasts"] == 2 and again["txid"] == tx["txid"]  # the same bytes, re-sent
        assert tx["txid"] in btc_chain.get("/mempool/txids").json()
        assert await conn.fetchval("SELECT count(*) FROM wd_txs") == 1  # nothing rebuilt

        btc_chain.mine(2)
        await proc.step()
        assert (await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"])) == "settled"

        # a reorg deeper than the required confirmations drops the settled transaction
        btc_chain.reorg(3, 3, drop_txids=[tx["txid"]])
        await proc.step()
        assert tx["txid"] in btc_chain.get("/mempool/txids").json()
        btc_chain.mine(2)
        await proc.step()
        await proc.step()
        assert await conn.fetchval("SELECT count(*) FROM balance_journal WHERE kind = 'withdraw_settle'") == 1
        history = btc_chain.get(f"/address/{DEST}/txs").json()
        assert [h["txid"] for h in history] == [tx["txid"]]
        assert await E.audit_clean(conn) == []
    finally:
        await btc.aclose()
        await pool.close()
        await conn.close()


@pytest.mark.asyncio
async def test_eth_reorg_drops_withdrawal(db_url: str, redis_url: str, eth_chain: Any, tmp_path: Path) -> None:
    from ledger.withdrawals_proc.chains import EthApi

    env = E.make_env(tmp_path, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    dest = "0x4444444444444444444444444444444444444444"
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn)
        proc = Processor(pool, env.signer, ProcessorConfig(), btc=None, eth=eth)
        funding = eth_chain.fund(proc.keys.eth_hot_address, 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (12) ON CONFLICT DO NOTHING")
        await E.credit(conn, user_id=12, asset="ETH", amount=10**9, txid=funding)
        w = await E.request_withdrawal(db_url, redis_url, user_id=12, asset="ETH", amount="0.25", address=dest)
        await proc.step()  # broadcast; the chain mines it at once (1 confirmation of 3)
        tx = await conn.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        assert eth_chain.rpc("eth_getTransactionReceipt", tx["txid"]) is not None
        eth_chain.reorg(1, 2, [tx["txid"]])
        assert eth_chain.rpc("eth_getTransactionReceipt", tx["txid"]) is None
        await proc.step()  # dropped: the stored bytes go out again (the chain mines them at once)
        again = await conn.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        assert again["broadcasts"] == 2 and again["txid"] == tx["txid"]
        eth_chain.mine(2)
        await proc.step()
        await proc.step()
        assert (await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"])) == "settled"
        assert await conn.fetchval("SELECT count(*) FROM balance_journal WHERE kind = 'withdraw_settle' "
                                   "AND ref_id = $1", w["id"]) == 1
        assert int(eth_chain.rpc("eth_getBalance", dest, "latest"), 16) == 249 * 10**15
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()
