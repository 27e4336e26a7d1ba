"""The watcher on the local Bitcoin regtest Esplora chain: deposits credited at N confirmations,
dust and unknown addresses, reorg before the threshold, reorg after the credit (reversal +
alert), and an Esplora host answering 429 / 503 for a while without any block being skipped."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import coincurve
import pytest

from ledger.audit import run_audit
from tests.chain_fixtures import BtcChain
from tests.watchers.helpers import (
    add_addresses,
    available,
    deposit_row,
    in_thread,
    ledger_deposits,
    seed,
    watcher,
)
from wallet.addresses import p2wpkh_address
from watchers.retry import RetryPolicy

FAST_RETRY = RetryPolicy(base_delay_s=0.005, max_delay_s=0.05, timeout_s=10.0)


def new_address() -> str:
    return p2wpkh_address(coincurve.PrivateKey().public_key.format(compressed=True), "regtest")


@pytest.fixture(scope="module")
def btc_start(btc_chain: BtcChain, db_url: str) -> int:
    async def prepare() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await seed(conn)
        finally:
            await conn.close()

    asyncio.run(prepare())
    return btc_chain.tip_height() + 1


@pytest.mark.asyncio
async def test_btc_deposits_credited_after_confirmations(btc_chain: BtcChain, db_url: str, btc_start: int) -> None:
    alice, alice2, bob, stranger = new_address(), new_address(), new_address(), new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(201, "btc", alice), (201, "btc", alice2), (202, "btc", bob)], first_index=0)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            tx_a = await in_thread(btc_chain.faucet, alice, 150_000)
            tx_a2 = await in_thread(btc_chain.faucet, alice2, 25_000)
            tx_dust = await in_thread(btc_chain.faucet, bob, 9_999)  # below min_deposit 10,000 sat
            tx_unknown = await in_thread(btc_chain.faucet, stranger, 500_000)
            await in_thread(btc_chain.mine, 1)
            await w.run_once()
            row = await deposit_row(conn, tx_a)
            assert (row["status"], row["confirmations"], row["asset"], row["user_id"]) == ("confirming", 1, "BTC", 201)
            assert row["deposit_key"] == f"btc:regtest:{tx_a}:{row['output_index']}"
            assert (await deposit_row(conn, tx_dust))["status"] == "dust"
            assert await conn.fetchval("SELECT count(*) FROM watcher_observations WHERE txid = $1", tx_unknown) == 0
            assert await available(conn, 201, "BTC") == 0
            await in_thread(btc_chain.mine, 1)  # demo BTC needs 2 confirmations
            await w.run_once()
            await w.run_once()
            assert await available(conn, 201, "BTC") == 175_000
            assert await available(conn, 202, "BTC") == 0
            for txid in (tx_a, tx_a2):
                assert [r["state"] for r in await ledger_deposits(conn, txid)] == ["credited"]
            assert await ledger_deposits(conn, tx_dust) == []
            assert (await deposit_row(conn, tx_dust))["status"] == "dust"
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_btc_reorg_before_threshold_then_credited_once(btc_chain: BtcChain, db_url: str,
                                                             btc_start: int) -> None:
    carol = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(203, "btc", carol)], first_index=10)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            await in_thread(btc_chain.mine, 2)  # blocks below the reorg that the watcher keeps
            await w.run_once()
            txid = await in_thread(btc_chain.faucet, carol, 300_000)
            await in_thread(btc_chain.mine, 1)
            await w.run_once()
            first = await deposit_row(conn, txid)
            assert (first["status"], first["confirmations"]) == ("confirming", 1)
            # The deposit's block is replaced and the tx left out: orphaned, then dropped.
            await in_thread(btc_chain.reorg, 1, 2, [txid])
            await w.run_once()
            assert (await deposit_row(conn, txid))["status"] == "dropped"
            assert await available(conn, 203, "BTC") == 0
            assert w.progress.reorgs >= 1
    finally:
        await conn.close()
    # A second payment, re-mined by a reorg of equal length: found again in the new block.
    dave = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(204, "btc", dave)], first_index=11)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            txid = await in_thread(btc_chain.faucet, dave, 400_000)
            await in_thread(btc_chain.mine, 1)
            await w.run_once()
            first = await deposit_row(conn, txid)
            await in_thread(btc_chain.reorg, 1, 1)  # same height, new block, tx mined again
            await w.run_once()
            again = await deposit_row(conn, txid)
            assert again["status"] == "confirming" and again["block_hash"] != first["block_hash"]
            assert again["confirmations"] == 1
            assert await available(conn, 204, "BTC") == 0
            await in_thread(btc_chain.mine, 1)
            await w.run_once()
            assert await available(conn, 204, "BTC") == 400_000
            assert len(await ledger_deposits(conn, txid)) == 1
            hashes = {r["block_hash"] for r in await conn.fetch(
                "SELECT block_hash FROM watcher_observations WHERE txid = $1", txid)}
            assert hashes == {first["block_hash"], again["block_hash"]}
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_btc_reorg_after_credit_reverses_and_alerts(btc_chain: BtcChain, db_url: str, btc_start: int,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    erin = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(205, "btc", erin)], first_index=20)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            await in_thread(btc_chain.mine, 2)  # blocks below the reorg that the watcher keeps
            txid = await in_thread(btc_chain.faucet, erin, 1_000_000)
            raw_hex = btc_chain.get(f"/tx/{txid}/hex").text
            await in_thread(btc_chain.mine, 2)
            await w.run_once()
            assert await available(conn, 205, "BTC") == 1_000_000
            with caplog.at_level(logging.ERROR, logger="watchers"):
                await in_thread(btc_chain.reorg, 3, 4, [txid])
                await w.run_once()
            row = await deposit_row(conn, txid)
            assert row["status"] == "reversed"
            assert await available(conn, 205, "BTC") == 0
            assert [r["state"] for r in await ledger_deposits(conn, txid)] == ["reversed"]
            kinds = [r["kind"] for r in await conn.fetch(
                "SELECT kind FROM watcher_alerts WHERE deposit_key = $1", row["deposit_key"])]
            assert kinds == ["deposit_reversed"]
            assert any(r.levelno == logging.ERROR and txid in r.getMessage() for r in caplog.records)
            # The same signed tx broadcast again and mined: credited again, under a new ledger key.
            assert btc_chain.post("/tx", raw_hex).text == txid
            await in_thread(btc_chain.mine, 2)
            await w.run_once()
            assert await available(conn, 205, "BTC") == 1_000_000
            ledger_rows = await ledger_deposits(conn, txid)
            assert [(r["deposit_key"], r["state"]) for r in ledger_rows] == [
                (row["deposit_key"], "reversed"), (row["deposit_key"] + ":g1", "credited")]
            assert (await deposit_row(conn, txid))["status"] == "credited"
            assert await run_audit(conn) == []  # the ledger's audit stays clean
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_rate_limited_esplora_skips_no_block(btc_chain: BtcChain, db_url: str, btc_start: int,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    users = [(210 + i, new_address()) for i in range(6)]
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(u, "btc", a) for u, a in users], first_index=30)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            await in_thread(btc_chain.mine, 1)
            await w.run_once()
            before = await conn.fetchval("SELECT height FROM watcher_cursors WHERE chain = 'btc'")
            txids = {}
            for user, address in users:  # one deposit per block, 6 blocks, then 2 more on top
                txids[user] = await in_thread(btc_chain.faucet, address, 50_000 + user)
                await in_thread(btc_chain.mine, 1)
            await in_thread(btc_chain.mine, 2)
            await in_thread(btc_chain.faults, 60, 429)
            with caplog.at_level(logging.WARNING, logger="watchers"):
                await w.run_once()
                await in_thread(btc_chain.faults, 15, 503)
                await in_thread(btc_chain.mine, 1)
                await w.run_once()
            retried = [r for r in caplog.records if "HTTP 429" in r.getMessage() or "HTTP 503" in r.getMessage()]
            assert len(retried) >= 60  # every fault was met and retried
            tip = btc_chain.tip_height()
            ours = {int(r["height"]): r["block_hash"] for r in await conn.fetch(
                "SELECT height, block_hash FROM watcher_blocks WHERE chain = 'btc' AND height > $1", before)}
            assert sorted(ours) == list(range(before + 1, tip + 1))  # contiguous: no block skipped
            for height in range(before + 1, tip + 1):
                assert ours[height] == btc_chain.get(f"/block-height/{height}").text
            for user, _ in users:
                assert await available(conn, user, "BTC") == 50_000 + user
                assert len(await ledger_deposits(conn, txids[user])) == 1
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_inconsistent_answers_are_retried_never_credited(btc_chain: BtcChain, db_url: str,
                                                               btc_start: int) -> None:
    from ledger.deposits import credit_deposit, reverse_deposit
    from tests.watchers.tamper import Rule, TamperingTransport
    from wallet.addressbook import AddressBook
    from watchers import repository as repo
    from watchers.daemon import Watcher, WatcherConfig
    from watchers.esplora import EsploraClient
    from watchers.sources import BtcSource

    frank = new_address()

    def drop_last_tx(page: list[dict[str, object]]) -> list[dict[str, object]]:
        return page[:-1]

    def other_parent(block: dict[str, object]) -> dict[str, object]:
        return {**block, "previousblockhash": "11" * 32}

    def claimed_elsewhere(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**tx, "status": {**tx["status"], "block_hash": "22" * 32}} for tx in page]

    rules: list[Rule] = []
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        await add_addresses(conn, [(220, "btc", frank)], first_index=50)
        assets = await repo.load_assets(conn, "btc", "regtest")
        client = EsploraClient(btc_chain.url, policy=FAST_RETRY, transport=TamperingTransport(rules))
        source = BtcSource(client, network="regtest", assets=assets)
        w = Watcher(WatcherConfig(chain="btc", network="regtest", start_height=btc_start, retry_delay_s=0.01),
                    pool, source, AddressBook("btc", "regtest"), assets, credit=credit_deposit, reverse=reverse_deposit)
        try:
            await in_thread(btc_chain.mine, 1)
            await w.run_once()  # catch up first: from here on every new block must extend our chain
            rules.extend([Rule(r"/block/[0-9a-f]{64}$", other_parent, times=2),
                          Rule(r"/block/[0-9a-f]{64}/txs/0$", drop_last_tx, times=2),
                          Rule(r"/block/[0-9a-f]{64}/txs/0$", claimed_elsewhere, times=1)])
            txid = await in_thread(btc_chain.faucet, frank, 77_777)
            await in_thread(btc_chain.faucet, new_address(), 12_345)  # a second tx in the block
            await in_thread(btc_chain.mine, 2)
            await w.run_once()
            assert [r.hits for r in rules] == [2, 2, 1]
            assert w.progress.retries >= 5
            assert w.progress.reorgs == 0  # a lying parent hash is not taken for a reorg
            assert await available(conn, 220, "BTC") == 77_777
            assert len(await ledger_deposits(conn, txid)) == 1
            obs = await conn.fetch("SELECT block_hash, amount_chain FROM watcher_observations WHERE txid = $1", txid)
            assert [(r["block_hash"], int(r["amount_chain"])) for r in obs] == [
                (btc_chain.get(f"/tx/{txid}/status").json()["block_hash"], 77_777)]
            tip = btc_chain.tip_height()
            low = max(btc_start, tip - 4)
            rows = await conn.fetch(
                "SELECT height, block_hash FROM watcher_blocks WHERE chain = 'btc' AND height >= $1",
                low)
            assert {int(r["height"]): r["block_hash"] for r in rows} == {
                h: btc_chain.get(f"/block-height/{h}").text for h in range(low, tip + 1)}
        finally:
            await source.aclose()
    finally:
        await pool.close()
        await conn.close()


@pytest.mark.asyncio
async def test_esplora_client_against_the_regtest_host(btc_chain: BtcChain, btc_start: int) -> None:
    from watchers.errors import ChainClientError, ChainRpcError, InconsistentAnswerError
    from watchers.esplora import EsploraClient

    async with EsploraClient(btc_chain.url, policy=FAST_RETRY) as client:
        tip = await client.tip_height()
        assert tip == btc_chain.tip_height()
        tip_hash = await client.block_hash_at(tip)
        block = await client.block(tip_hash)
        assert block["height"] == tip and block["previousblockhash"] == await client.block_hash_at(tip - 1)
        txid = await in_thread(btc_chain.faucet, new_address(), 60_000)
        status = await client.tx_status(txid)
        assert status is not None and status["confirmed"] is False
        [mined] = await in_thread(btc_chain.mine, 1)
        status = await client.tx_status(txid)
        assert status is not None and status["confirmed"] is True and status["block_hash"] == mined
        tx = await client.tx(txid)
        assert tx is not None and 60_000 in [out["value"] for out in tx["vout"]]
        assert await client.tx("00" * 32) is None
        txs = await client.block_txs(mined, (await client.block(mined))["tx_count"])
        assert txid in [t["txid"] for t in txs]
        with pytest.raises((InconsistentAnswerError, ChainRpcError)):  # a page that does not exist: one error
            await client.block_txs(mined, len(txs) + 60)
        with pytest.raises(ChainRpcError):
            await client.broadcast("00")  # not a transaction: the host rejects it, no retry
    limited = RetryPolicy(base_delay_s=0.001, max_delay_s=0.002, max_attempts=3)
    async with EsploraClient(btc_chain.url, policy=limited) as client:
        await in_thread(btc_chain.faults, 3, 503)
        with pytest.raises(ChainClientError, match="gave up after 3 attempts"):
            await client.tip_height()
        assert await client.tip_height() == btc_chain.tip_height()  # the faults are used up


@pytest.mark.asyncio
async def test_status_command_shows_cursor_deposits_and_alerts(btc_chain: BtcChain, db_url: str,
                                                              btc_start: int) -> None:
    import os
    import subprocess
    import sys

    hank = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(230, "btc", hank)], first_index=60)
        async with watcher(db_url, "btc", btc_chain.url, btc_start, retry=FAST_RETRY) as w:
            await in_thread(btc_chain.faucet, hank, 33_000)
            await in_thread(btc_chain.mine, 2)
            await w.run_once()
            cursor_hash = await conn.fetchval("SELECT block_hash FROM watcher_cursors WHERE chain = 'btc'")
    finally:
        await conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env["COFFER_DATABASE_URL"] = db_url
    result = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "coffer", "watcher", "status", "--chain", "btc", "--network", "regtest"],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"watcher btc/regtest: height {btc_chain.tip_height()} block {cursor_hash}"
    assert lines[1].startswith("deposits: ") and "credited" in lines[1]
    assert lines[2].startswith("followed txs: ")
    assert lines[3].startswith("alerts: ")
