"""Stuck withdrawals are fee-bumped and the replacement confirms: Bitcoin by RBF from the CLI
(`coffer withdrawals bump`), Ethereum automatically after `bump_after_s` with the same nonce and
fees at least 10% higher. Each is paid once and settled once with the replacement's txid."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coffer.cli import main
from ledger.withdrawals_proc.chains import BtcApi, EthApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.withdrawals import env as E

BTC_DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
ETH_DEST = "0x1111111111111111111111111111111111111111"


async def _rows(db_url: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(db_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def _step(db_url: str, env: E.Env, btc_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    btc = BtcApi(btc_url)
    try:
        await Processor(pool, env.signer, ProcessorConfig(), btc=btc, eth=None).step()
    finally:
        await btc.aclose()
        await pool.close()


def test_btc_rbf_bump_from_cli(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = E.make_env(tmp_path)

    async def setup() -> Any:
        conn = await asyncpg.connect(db_url)
        try:
            await E.seed_assets(conn)
            address = await E.deposit_address(conn, env, 4, "BTC")
            txid = btc_chain.faucet(address, 3_000_000)
            btc_chain.mine(2)
            await E.credit(conn, user_id=4, asset="BTC", amount=3_000_000, txid=txid)
        finally:
            await conn.close()
        return await E.request_withdrawal(db_url, redis_url, user_id=4, asset="BTC", amount="0.004", address=BTC_DEST)

    w = asyncio.run(setup())
    asyncio.run(_step(db_url, env, btc_chain.url))
    (old,) = asyncio.run(_rows(db_url, "SELECT * FROM wd_txs WHERE withdrawal_id = $1", w["id"]))
    assert old["state"] == "broadcast" and old["txid"] in btc_chain.get("/mempool/txids").json()

    for key, value in {"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ESPLORA_URL": btc_chain.url,
                       **env.signer_env()}.items():
        monkeypatch.setenv(key, value)
    assert main(["withdrawals", "bump", str(w["id"])]) == 0
    out = capsys.readouterr().out
    txs = asyncio.run(_rows(db_url, "SELECT * FROM wd_txs WHERE withdrawal_id = $1 ORDER BY id", w["id"]))
    assert [t["state"] for t in txs] == ["replaced", "broadcast"] and txs[1]["txid"] in out
    new = txs[1]
    assert int(new["fee_chain"]) > int(old["fee_chain"]) and int(new["fee_rate"]) > int(old["fee_rate"])
    mempool = btc_chain.get("/mempool/txids").json()
    assert new["txid"] in mempool and old["txid"] not in mempool  # the replacement evicted the original
    assert main(["withdrawals", "bump", "999999"]) == 1  # unknown withdrawal: one line, exit 1
    assert "coffer: error:" in capsys.readouterr().err

    btc_chain.mine(2)
    asyncio.run(_step(db_url, env, btc_chain.url))
    (row,) = asyncio.run(_rows(db_url, "SELECT state, txid FROM withdrawals WHERE id = $1", w["id"]))
    assert (row["state"], row["txid"]) == ("settled", new["txid"])
    history = btc_chain.get(f"/address/{BTC_DEST}/txs").json()
    assert [h["txid"] for h in history if h["status"]["confirmed"]] == [new["txid"]]
    paid = [o["value"] for o in history[0]["vout"] if o.get("scriptpubkey_address") == BTC_DEST]
    assert paid == [390_000]  # the bump came out of the change, never out of the user's amount
    conn_audit = asyncio.run(_audit(db_url))
    assert conn_audit == []


async def _audit(db_url: str) -> list[str]:
    conn = await asyncpg.connect(db_url)
    try:
        return await E.audit_clean(conn)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_eth_stuck_tx_replaced_automatically(db_url: str, redis_url: str, eth_chain: Any,
                                                   tmp_path: Path) -> None:
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    env = E.make_env(tmp_path, eth_chain_id=chain_id)
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn)
        proc = Processor(pool, env.signer, ProcessorConfig(bump_after_s=0.0), btc=None, eth=eth)
        hot = proc.keys.eth_hot_address
        funding = eth_chain.fund(hot, 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (5) ON CONFLICT DO NOTHING")
        await E.credit(conn, user_id=5, asset="ETH", amount=10**9, txid=funding)
        w = await E.request_withdrawal(db_url, redis_url, user_id=5, asset="ETH", amount="0.05", address=ETH_DEST)
        eth_chain.set_auto_mine(False)
        try:
            await proc.step()  # built, signed, broadcast; then (bump_after_s=0) bumped in the same pass
            txs = await conn.fetch("SELECT * FROM wd_txs WHERE withdrawal_id = $1 ORDER BY id", w["id"])
            assert [t["state"] for t in txs] == ["replaced", "broadcast"]
            old, new = txs
            assert old["nonce"] == new["nonce"]
            assert int(new["fee_rate"]) * 10 >= int(old["fee_rate"]) * 11
            assert int(new["tip_wei"]) * 10 >= int(old["tip_wei"]) * 11
            pool_txs = eth_chain.rpc("coffer_mempool")
            assert pool_txs == [new["txid"]]  # the node replaced the stuck transaction
        finally:
            eth_chain.set_auto_mine(True)
        eth_chain.mine(3)
        await proc.step()
        row = await conn.fetchrow("SELECT state, txid FROM withdrawals WHERE id = $1", w["id"])
        assert (row["state"], row["txid"]) == ("settled", new["txid"])
        assert eth_chain.rpc("eth_getTransactionReceipt", old["txid"]) is None
        assert int(eth_chain.rpc("eth_getBalance", ETH_DEST, "latest"), 16) == 49 * 10**15
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()
