"""The processor's crash points, each reproduced exactly: a transaction signed and committed but not
broadcast; broadcast but not recorded; broadcast and already confirmed but not recorded. After the
"crash" a fresh processor sends the stored bytes (never a rebuilt transaction), recognises what the
node already has, and settles once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import BtcApi, EthApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.withdrawals import env as E

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def _signed_not_broadcast(proc: Processor, wid: int) -> Any:
    """What a crash right after the signing transaction committed leaves behind."""
    await proc.build_new(wid)
    return await proc.pool.fetchrow("SELECT * FROM wd_txs WHERE withdrawal_id = $1", wid)


@pytest.mark.asyncio
@pytest.mark.parametrize("point", ["committed", "sent", "confirmed"])
async def test_btc_crash_points(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path, point: str) -> None:
    from ledger.withdrawals_proc import repo

    env = E.make_env(tmp_path)
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    btc = BtcApi(btc_chain.url)
    user = {"committed": 21, "sent": 22, "confirmed": 23}[point]
    try:
        await E.seed_assets(conn)
        address = await E.deposit_address(conn, env, user, "BTC")
        funding = btc_chain.faucet(address, 1_000_000)
        btc_chain.mine(2)
        await E.credit(conn, user_id=user, asset="BTC", amount=1_000_000, txid=funding)
        w = await E.request_withdrawal(db_url, redis_url, user_id=user, asset="BTC", amount="0.001", address=DEST)
        first = Processor(pool, env.signer, ProcessorConfig(), btc=btc, eth=None)
        async with pool.acquire() as c, c.transaction():
            await repo.take_up_new(c)
        tx = await _signed_not_broadcast(first, w["id"])
        assert tx["state"] == "signed"
        if point in ("sent", "confirmed"):
            assert btc_chain.post("/tx", tx["signed"]).status_code == 200  # sent, then the crash
        if point == "confirmed":
            btc_chain.mine(2)

        second = Processor(pool, env.signer, ProcessorConfig(), btc=btc, eth=None)  # the restart
        await second.step()
        rows = await conn.fetch("SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"])
        assert len(rows) == 1 and rows[0]["txid"] == tx["txid"] and rows[0]["signed"] == tx["signed"]
        if point != "confirmed":
            btc_chain.mine(2)
            await second.step()
        assert await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"]) == "settled"
        await second.step()
        assert await conn.fetchval("SELECT count(*) FROM balance_journal WHERE kind = 'withdraw_settle' "
                                   "AND ref_id = $1", w["id"]) == 1
        decisions = await conn.fetchval("SELECT count(*) FROM signer_decisions WHERE request_id LIKE $1",
                                        f"wd-{w['id']}-%")
        assert decisions == 1  # signed once: the restart never asked the signer again
        history = btc_chain.get(f"/address/{DEST}/txs").json()
        assert sum(1 for h in history if h["txid"] == tx["txid"]) == 1
        assert await E.audit_clean(conn) == []
    finally:
        await btc.aclose()
        await pool.close()
        await conn.close()


@pytest.mark.asyncio
async def test_eth_sent_before_the_crash_recorded_it(db_url: str, redis_url: str, eth_chain: Any,
                                                     tmp_path: Path) -> None:
    from ledger.withdrawals_proc import repo

    env = E.make_env(tmp_path, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn)
        first = Processor(pool, env.signer, ProcessorConfig(), btc=None, eth=eth)
        hot = first.keys.eth_hot_address
        funding = eth_chain.fund(hot, 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (24) ON CONFLICT DO NOTHING")
        await E.credit(conn, user_id=24, asset="ETH", amount=10**9, txid=funding)
        ws = [await E.request_withdrawal(db_url, redis_url, user_id=24, asset="ETH", amount=a,
                                         address="0x3333333333333333333333333333333333333333") for a in ("0.1", "0.2")]
        async with pool.acquire() as c, c.transaction():
            await repo.take_up_new(c)
        txs = [await _signed_not_broadcast(first, w["id"]) for w in ws]
        eth_chain.rpc("eth_sendRawTransaction", txs[0]["signed"])  # the first was sent, then the crash
        second = Processor(pool, env.signer, ProcessorConfig(), btc=None, eth=eth)
        await second.step()
        eth_chain.mine(3)
        await second.step()
        assert [await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", w["id"]) for w in ws] == [
            "settled", "settled"]
        rows = await conn.fetch("SELECT nonce, txid FROM wd_txs WHERE chain = 'eth' ORDER BY nonce")
        assert [r["txid"] for r in rows] == [t["txid"] for t in txs]
        assert int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16) == int(rows[-1]["nonce"]) + 1
        assert int(eth_chain.rpc("eth_getBalance", "0x3333333333333333333333333333333333333333", "latest"), 16) == (
            99 + 199) * 10**15
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()
