"""Stuck internal Ethereum transactions are fee-bumped like withdrawals, on the local chain with manual mining.

A USDT deposit address without ETH gets a gas top-up from the hot address (`GAS:ETH`) and an ETH
deposit address is swept to the hot address (`SWEEP:ETH`); both stay pending, and a hot
withdrawal queues behind the top-up's nonce. Once the top-up is older than `bump_after_s` the
processor replaces it at the same nonce with fees >= 10% higher, signed under `GAS:ETH`; the
sweep is bumped from `coffer withdrawals bump --tx` (its higher fee comes out of the amount
swept). The replacements confirm, the originals are retired, the token sweep and a later
withdrawal follow with contiguous hot nonces; users' balances move only by their own
withdrawals and `coffer ledger audit` is clean. A transaction signed offline is not bumped: the
CLI says so and leaves it to the operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from coffer.cli import main
from ledger.withdrawals_proc.chains import EthApi
from ledger.withdrawals_proc.eth_build import ETH_TRANSFER_GAS
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from ledger.withdrawals_proc.sweep import SweepConfig
from tests.withdrawals import env as E

DEST = "0x2222222222222222222222222222222222222222"
T = TypeVar("T")


def _run(db_url: str, eth_url: str, env: E.Env, fn: Callable[[Processor, asyncpg.Connection], Awaitable[T]]) -> T:
    """`fn(processor, connection)` in a fresh event loop (the CLI runs its own between phases)."""

    async def go() -> T:
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
        conn = await asyncpg.connect(db_url)
        eth = EthApi(eth_url)
        try:
            proc = Processor(pool, env.signer, ProcessorConfig(bump_after_s=3600.0), btc=None, eth=eth,
                             sweep=SweepConfig(sweep_eth=True, eth_min_sweep_wei=10**15))
            return await fn(proc, conn)
        finally:
            await eth.aclose()
            await conn.close()
            await pool.close()

    return asyncio.run(go())


def _txs(db_url: str, sql: str = "SELECT * FROM wd_txs ORDER BY id", *args: Any) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(db_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def _raised(old: Any, new: Any) -> bool:
    return int(new["fee_rate"]) * 10 >= int(old["fee_rate"]) * 11 and int(new["tip_wei"]) * 10 >= int(
        old["tip_wei"]) * 11


def test_stuck_gas_top_up_and_sweep_are_replaced(db_url: str, redis_url: str, eth_chain: Any, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    token = eth_chain.deploy_erc20()
    env = E.make_env(tmp_path, usdt_contract=token, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    url = eth_chain.url

    async def setup(proc: Processor, conn: asyncpg.Connection) -> tuple[str, str, str, int, int]:
        await E.seed_assets(conn, usdt_contract=token)
        a_usdt = await E.deposit_address(conn, env, 31, "USDT")
        a_eth = await E.deposit_address(conn, env, 33, "ETH")
        mint = eth_chain.mint_erc20(token, a_usdt, 50 * 10**6)  # no ETH there: needs a gas top-up
        dep = eth_chain.fund(a_eth, 10**16)
        await E.credit(conn, user_id=31, asset="USDT", amount=50 * 10**6, txid=mint)
        await E.credit(conn, user_id=33, asset="ETH", amount=10**7, txid=dep)
        hot = proc.keys.eth_hot_address
        fund = eth_chain.fund(hot, 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (32) ON CONFLICT DO NOTHING")
        await E.credit(conn, user_id=32, asset="ETH", amount=10**9, txid=fund)
        return hot, a_usdt, a_eth, await proc._api("eth").nonce(hot, "pending"), await proc._api("eth").balance_wei(
            hot)

    hot, a_usdt, a_eth, n0, hot_before = _run(db_url, url, env, setup)
    eth_chain.set_auto_mine(False)
    try:
        # 1. the top-up and the ETH sweep are signed, then broadcast; a withdrawal queues behind them
        async def two_passes(proc: Processor, conn: asyncpg.Connection) -> None:
            await proc.step()
            await proc.step()

        _run(db_url, url, env, two_passes)
        w1 = asyncio.run(E.request_withdrawal(db_url, redis_url, user_id=32, asset="ETH", amount="0.1",
                                              address=DEST))
        _run(db_url, url, env, lambda proc, conn: proc.step())
        txs = sorted(_txs(db_url), key=lambda t: t["purpose"])
        assert [(t["purpose"], t["asset"], t["state"], t["from_address"], t["nonce"]) for t in txs] == [
            ("gas", "ETH", "broadcast", hot.lower(), n0), ("sweep", "ETH", "broadcast", a_eth.lower(), 0),
            ("withdrawal", "ETH", "broadcast", hot.lower(), n0 + 1)]
        gas0, sweep0, wd1 = txs
        assert sorted(eth_chain.rpc("coffer_mempool")) == sorted([gas0["txid"], sweep0["txid"], wd1["txid"]])

        # 2. younger than bump_after_s: left alone; once older, replaced at its nonce by the processor
        _run(db_url, url, env, lambda proc, conn: proc.step())
        assert len(_txs(db_url)) == 3
        _txs(db_url, "UPDATE wd_txs SET first_broadcast_at = first_broadcast_at - interval '2 hours' "
                     "WHERE id = $1 RETURNING id", gas0["id"])
        _run(db_url, url, env, lambda proc, conn: proc.step())
        states = {t["id"]: t["state"] for t in _txs(db_url)}
        assert [states[t["id"]] for t in (gas0, sweep0, wd1)] == ["replaced", "broadcast", "broadcast"]
        (gas1,) = _txs(db_url, "SELECT * FROM wd_txs WHERE replaces = $1", gas0["id"])
        assert len(states) == 4 and states[gas1["id"]] == "broadcast"
        assert (gas1["purpose"], gas1["replaces"], gas1["generation"], gas1["nonce"], gas1["from_address"],
                gas1["destination"], gas1["amount_chain"]) == ("gas", gas0["id"], 1, n0, hot.lower(),
                                                               gas0["destination"], gas0["amount_chain"])
        assert _raised(gas0, gas1)
        (decision,) = _txs(db_url, "SELECT * FROM signer_decisions WHERE request_id = $1",
                           f"wd-None-tx-{gas1['id']}")
        assert (decision["asset"], decision["approved"]) == ("GAS:ETH", True)  # the original's policy asset

        # 3. the stuck sweep from the CLI: same nonce, higher fees, the extra fee out of the amount swept
        for key, value in {"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ETH_RPC_URL": url,
                           "COFFER_SIGNER_ETH_CHAIN_ID": str(int(eth_chain.rpc("eth_chainId"), 16)),
                           **env.signer_env()}.items():
            monkeypatch.setenv(key, value)
        for key in ("COFFER_WITHDRAWALS_ESPLORA_URL", "COFFER_WATCHER_ESPLORA_URL", "COFFER_WATCHER_ETH_RPC_URL",
                    "COFFER_WITHDRAWALS_SWEEP_ETH", "COFFER_WITHDRAWALS_BUMP_AFTER_S"):
            monkeypatch.delenv(key, raising=False)
        capsys.readouterr()
        assert main(["withdrawals", "bump", "--tx", str(sweep0["id"])]) == 0
        out = capsys.readouterr().out
        (sweep1,) = _txs(db_url, "SELECT * FROM wd_txs WHERE replaces = $1", sweep0["id"])
        assert f"transaction {sweep0['id']} replaced by {sweep1['id']} ({sweep1['txid']}" in out
        assert (sweep1["state"], sweep1["nonce"], sweep1["from_address"]) == ("broadcast", 0, a_eth.lower())
        assert _raised(sweep0, sweep1)
        extra = ETH_TRANSFER_GAS * (int(sweep1["fee_rate"]) - int(sweep0["fee_rate"]))
        assert int(sweep1["amount_chain"]) == int(sweep0["amount_chain"]) - extra
        (decision,) = _txs(db_url, "SELECT * FROM signer_decisions WHERE request_id = $1",
                           f"wd-None-tx-{sweep1['id']}")
        assert (decision["asset"], decision["approved"]) == ("SWEEP:ETH", True)
        pool_now = eth_chain.rpc("coffer_mempool")
        assert sorted(pool_now) == sorted([wd1["txid"], gas1["txid"], sweep1["txid"]])  # the originals evicted

        # 4. mined: the replacements confirm, the withdrawal settles, the token sweep follows
        async def settle(proc: Processor, conn: asyncpg.Connection) -> None:
            for _ in range(12):
                eth_chain.mine(1)
                await proc.step()
                busy = await conn.fetchval("SELECT count(*) FROM wd_txs WHERE state IN "
                                           "('unsigned', 'signed', 'broadcast', 'replaced')")
                swept = await proc._api("eth").token_balance(token, a_usdt) == 0
                if not busy and swept:
                    return

        _run(db_url, url, env, settle)
    finally:
        eth_chain.set_auto_mine(True)

    # 5. a later withdrawal takes the next hot nonce
    w2 = asyncio.run(E.request_withdrawal(db_url, redis_url, user_id=32, asset="ETH", amount="0.2", address=DEST))

    async def later(proc: Processor, conn: asyncpg.Connection) -> None:
        for _ in range(3):
            await proc.step()
        eth_chain.mine(2)
        await proc.step()

    _run(db_url, url, env, later)

    txs = {t["id"]: t for t in _txs(db_url)}
    assert txs[gas0["id"]]["state"] == "failed" and txs[sweep0["id"]]["state"] == "failed"
    assert txs[gas1["id"]]["state"] == "confirmed" and txs[sweep1["id"]]["state"] == "confirmed"
    assert eth_chain.rpc("eth_getTransactionReceipt", gas0["txid"]) is None
    assert eth_chain.rpc("eth_getTransactionReceipt", sweep0["txid"]) is None
    assert {t["state"] for t in txs.values()} == {"confirmed", "failed"}
    hot_txs = sorted((t for t in txs.values() if t["from_address"] == hot.lower() and t["state"] == "confirmed"),
                     key=lambda t: int(t["nonce"]))
    assert [(t["purpose"], int(t["nonce"])) for t in hot_txs] == [("gas", n0), ("withdrawal", n0 + 1),
                                                                   ("withdrawal", n0 + 2)]
    rows = _txs(db_url, "SELECT id, state, txid FROM withdrawals ORDER BY id")
    assert [(w["id"], w["state"]) for w in rows] == [(w1["id"], "settled"), (w2["id"], "settled")]
    assert rows[0]["txid"] == wd1["txid"]
    usdt_sweeps = [t for t in txs.values() if t["purpose"] == "sweep" and t["asset"] == "USDT"]
    assert [t["state"] for t in usdt_sweeps] == ["confirmed"]

    async def chain_and_ledger(proc: Processor, conn: asyncpg.Connection) -> None:
        eth = proc._api("eth")
        assert await eth.token_balance(token, hot) == 50 * 10**6 and await eth.token_balance(token, a_usdt) == 0
        fees = sum(int(t["network_fee_chain"]) for t in hot_txs)
        paid = 99 * 10**15 + 199 * 10**15  # 0.1 and 0.2 ETH less the 0.001 ETH withdrawal fee each
        assert await eth.balance_wei(hot) == (hot_before + int(sweep1["amount_chain"]) - int(gas1["amount_chain"])
                                              - paid - fees)
        balances = {(b["user_id"], b["asset"]): (int(b["available"]), int(b["frozen"])) for b in await conn.fetch(
            "SELECT user_id, asset, available, frozen FROM balances WHERE user_id IN (31, 32, 33)")}
        assert balances == {(31, "USDT"): (50 * 10**6, 0), (32, "ETH"): (10**9 - 3 * 10**8, 0),
                            (33, "ETH"): (10**7, 0)}  # the sweeps and the top-up never touch a user's balance
        assert await E.audit_clean(conn) == []

    _run(db_url, url, env, chain_and_ledger)

    # 6. offline-signed (a stand-in row for a hot-to-cold PSBT exported and signed with coffer-signer;
    #    no hot-signer decision): not bumped, and the CLI says why
    (fake,) = _txs(db_url, "INSERT INTO wd_txs (purpose, chain, network, asset, destination, amount_chain, unsigned, "
                           "txid, state, fee_chain, fee_rate, first_broadcast_at) VALUES ('cold', 'btc', 'regtest', "
                           "'BTC', 'bcrt1qcold', 100000, 'cHNidP8=', repeat('ab', 32), 'broadcast', 500, 2000, now()) "
                           "RETURNING id")
    assert main(["withdrawals", "bump", "--tx", str(fake["id"])]) == 1
    out = capsys.readouterr().out
    assert f"NOT BUMPED: transaction {fake['id']} (btc cold BTC" in out
    assert "signed offline (cold path): the hot key cannot re-sign" in out and "left to the operator" in out
    # --stuck lists it too (a Bitcoin API is configured, never called: the refusal comes first)
    monkeypatch.setenv("COFFER_WITHDRAWALS_ESPLORA_URL", "http://127.0.0.1:9")
    assert main(["withdrawals", "bump", "--stuck"]) == 0
    out = capsys.readouterr().out
    assert f"NOT BUMPED: transaction {fake['id']} (btc cold BTC" in out and "1 stuck transaction(s), 0 bump(s)" in out
    assert _txs(db_url, "SELECT state FROM wd_txs WHERE id = $1", fake["id"])[0]["state"] == "broadcast"
