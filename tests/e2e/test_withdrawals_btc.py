"""BTC withdrawal end to end on the local regtest chain: request -> hold -> policy -> build -> sign ->
persist -> broadcast -> confirm -> settle, with the ledger audit clean and the chain agreeing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import BtcApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.withdrawals import env as E

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"  # BIP173 test vector program on regtest


@pytest.mark.asyncio
async def test_btc_withdrawal_hot_path(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path) -> None:
    env = E.make_env(tmp_path)
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    btc = BtcApi(btc_chain.url)
    try:
        await E.seed_assets(conn)
        address = await E.deposit_address(conn, env, 1, "BTC")
        funding = btc_chain.faucet(address, 5_000_000)
        btc_chain.mine(2)
        await E.credit(conn, user_id=1, asset="BTC", amount=5_000_000, txid=funding)

        w = await E.request_withdrawal(db_url, redis_url, user_id=1, asset="BTC", amount="0.002", address=DEST)
        assert w is not None and w["state"] == "held"
        assert w["amount"] == 200_000 and w["fee"] == 10_000  # 0.002 BTC held, of which 10_000 sat fee
        bal = await conn.fetchrow("SELECT available, frozen FROM balances WHERE user_id = 1 AND asset = 'BTC'")
        assert (bal["available"], bal["frozen"]) == (4_800_000, 200_000)

        proc = Processor(pool, env.signer, ProcessorConfig(), btc=btc, eth=None)
        await proc.step()
        tx = await conn.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        assert tx["state"] == "broadcast" and tx["signed"] is not None
        mempool = btc_chain.get("/mempool/txids").json()
        assert tx["txid"] in mempool
        decision = await conn.fetchrow("SELECT approved, txid FROM signer_decisions WHERE request_id LIKE $1",
                                       f"wd-{w['id']}-%")
        assert decision["approved"] and decision["txid"] == tx["txid"]

        btc_chain.mine(1)
        await proc.step()  # one confirmation of two: not settled yet
        assert (await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"])) == "held"
        btc_chain.mine(1)
        await proc.step()
        assert (await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"])) == "settled"
        assert (await conn.fetchval("SELECT stage FROM wd_proc WHERE withdrawal_id = $1", w["id"])) == "done"
        await proc.step()  # idempotent: a second pass settles nothing twice
        assert await conn.fetchval("SELECT count(*) FROM balance_journal WHERE kind = 'withdraw_settle'") == 1

        onchain = btc_chain.get(f"/tx/{tx['txid']}").json()
        paid = [o for o in onchain["vout"] if o.get("scriptpubkey_address") == DEST]
        assert [o["value"] for o in paid] == [190_000]  # amount - withdrawal fee
        assert onchain["fee"] == int(tx["fee_chain"])
        bal = await conn.fetchrow("SELECT available, frozen FROM balances WHERE user_id = 1 AND asset = 'BTC'")
        assert (bal["available"], bal["frozen"]) == (4_800_000, 0)
        assert await E.audit_clean(conn) == []

        # custody: every hot coin on chain = deposits - sent - network fees paid
        change = await conn.fetch("SELECT address FROM wd_btc_change")
        total = 0
        for a in [address] + [c["address"] for c in change]:
            total += sum(u["value"] for u in btc_chain.get(f"/address/{a}/utxo").json())
        assert total == 5_000_000 - 190_000 - onchain["fee"]
    finally:
        await btc.aclose()
        await pool.close()
        await conn.close()
