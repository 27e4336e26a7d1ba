"""The watcher on the local Ethereum chain: ETH and ERC-20 deposits credited at N confirmations,
dust and unknown addresses, reorg before the threshold, reorg after the credit (reversal + alert)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import asyncpg
import pytest
from eth_account import Account

from ledger.audit import run_audit
from tests.chain_fixtures import EthChain
from tests.watchers.helpers import (
    add_addresses,
    available,
    deposit_row,
    in_thread,
    ledger_deposits,
    seed,
    watcher,
)

GWEI = 10**9


@pytest.fixture(scope="module")
def eth_setup(eth_chain: EthChain, db_url: str) -> dict[str, object]:
    token = eth_chain.deploy_erc20()

    async def prepare() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await seed(conn, usdt_contract=token)
        finally:
            await conn.close()

    asyncio.run(prepare())
    return {"token": token, "start": eth_chain.block_number() + 1}


def new_address() -> str:
    return str(Account.create().address)


@pytest.mark.asyncio
async def test_eth_and_erc20_credited_after_confirmations(eth_chain: EthChain, db_url: str,
                                                          eth_setup: dict[str, object]) -> None:
    token = str(eth_setup["token"])
    alice, bob, stranger = new_address(), new_address(), new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(101, "eth", alice), (102, "eth", bob)], first_index=100)
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            # Auto-mine: one block per tx, in this order; demo ETH and USDT need 3 confirmations.
            tx_dust = await in_thread(eth_chain.fund, alice, 10**14)  # 100,000 gwei < min_deposit 1,000,000
            tx_unknown = await in_thread(eth_chain.fund, stranger, 10**18)
            tx_usdt = await in_thread(eth_chain.mint_erc20, token, bob, 2_500_000)
            tx_eth = await in_thread(eth_chain.fund, alice.lower(), 3 * 10**18 // 2 + 123)  # 1.5 ETH + 123 wei
            await w.run_once()
            eth_dep = await deposit_row(conn, tx_eth)
            assert (eth_dep["status"], eth_dep["confirmations"], eth_dep["asset"]) == ("confirming", 1, "ETH")
            usdt_dep = await deposit_row(conn, tx_usdt)
            assert (usdt_dep["status"], usdt_dep["confirmations"], usdt_dep["asset"]) == ("confirming", 2, "USDT")
            assert (await deposit_row(conn, tx_dust))["status"] == "dust"
            assert await conn.fetchval("SELECT count(*) FROM watcher_observations WHERE txid = $1",
                                       tx_unknown.lower()) == 0
            assert await available(conn, 101, "ETH") == 0
            assert await available(conn, 102, "USDT") == 0

            await in_thread(eth_chain.mine, 1)
            await w.run_once()
            assert await available(conn, 102, "USDT") == 2_500_000
            assert await available(conn, 101, "ETH") == 0
            assert (await deposit_row(conn, tx_eth))["confirmations"] == 2

            await in_thread(eth_chain.mine, 1)
            await w.run_once()
            await w.run_once()  # idempotent: nothing new
            assert await available(conn, 101, "ETH") == 3 * GWEI // 2  # the 123 wei below one gwei are not credited
            assert await available(conn, 102, "USDT") == 2_500_000
            usdt_dep = await deposit_row(conn, tx_usdt)
            assert usdt_dep["status"] == "credited"
            assert usdt_dep["deposit_key"].startswith(f"eth:regtest:{tx_usdt.lower()}:log")
            assert (await deposit_row(conn, tx_eth))["status"] == "credited"
            assert (await deposit_row(conn, tx_dust))["status"] == "dust"
            assert len(await ledger_deposits(conn, tx_eth)) == 1
            assert len(await ledger_deposits(conn, tx_usdt)) == 1
            assert await ledger_deposits(conn, tx_dust) == []
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_reorg_before_threshold_not_credited_then_credited_once_remined(
        eth_chain: EthChain, db_url: str, eth_setup: dict[str, object]) -> None:
    carol = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(103, "eth", carol)], first_index=200)
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            await in_thread(eth_chain.mine, 3)  # blocks below the reorg that the watcher keeps
            await w.run_once()
            txid = await in_thread(eth_chain.fund, carol, 2 * 10**18)
            await in_thread(eth_chain.mine, 1)
            await w.run_once()
            first = await deposit_row(conn, txid)
            assert first["status"] == "confirming" and first["confirmations"] == 2
            # Replace the deposit's block and the one above it by a single new block: the tx is
            # re-mined there, so it now has 1 confirmation again.
            await in_thread(eth_chain.reorg, 2, 1)
            await w.run_once()
            again = await deposit_row(conn, txid)
            assert again["status"] == "confirming" and again["block_hash"] != first["block_hash"]
            assert again["confirmations"] == 1
            assert await available(conn, 103, "ETH") == 0
            assert await conn.fetchval("SELECT count(DISTINCT block_hash) FROM watcher_observations WHERE txid = $1",
                                       txid.lower()) == 2
            assert w.progress.reorgs >= 1
            await in_thread(eth_chain.mine, 2)
            await w.run_once()
            assert await available(conn, 103, "ETH") == 2 * GWEI
            assert len(await ledger_deposits(conn, txid)) == 1
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_reorg_after_credit_reverses_and_alerts(eth_chain: EthChain, db_url: str,
                                                      eth_setup: dict[str, object],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    dave = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(104, "eth", dave)], first_index=300)
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            await in_thread(eth_chain.mine, 3)  # blocks below the reorg that the watcher keeps
            await w.run_once()
            txid = await in_thread(eth_chain.fund, dave, 4 * 10**18)
            await in_thread(eth_chain.mine, 3)
            await w.run_once()
            assert await available(conn, 104, "ETH") == 4 * GWEI
            with caplog.at_level(logging.ERROR, logger="watchers"):
                await in_thread(eth_chain.reorg, 5, 6, [txid])  # deeper than 3 confirmations; tx gone
                await w.run_once()
            row = await deposit_row(conn, txid)
            assert row["status"] == "reversed"
            assert await available(conn, 104, "ETH") == 0
            ledger_rows = await ledger_deposits(conn, txid)
            assert [r["state"] for r in ledger_rows] == ["reversed"]
            alerts = await conn.fetch("SELECT kind, message FROM watcher_alerts WHERE deposit_key = $1",
                                      row["deposit_key"])
            assert [a["kind"] for a in alerts] == ["deposit_reversed"]
            assert any(r.levelno == logging.ERROR and txid.lower() in r.getMessage() for r in caplog.records)
            assert await run_audit(conn) == []  # the ledger's audit stays clean
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_finalized_mode_waits_for_the_finalized_tag(eth_chain: EthChain, db_url: str,
                                                          eth_setup: dict[str, object]) -> None:
    erin = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await add_addresses(conn, [(105, "eth", erin)], first_index=400)
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"])), use_finalized=True) as w:
            txid = await in_thread(eth_chain.fund, erin, 10**18)
            await in_thread(eth_chain.mine, 2)  # 3 confirmations: enough by count, not yet finalized
            await w.run_once()
            finalized = int(eth_chain.rpc("eth_getBlockByNumber", "finalized", False)["number"], 16)
            row = await deposit_row(conn, txid)
            assert row["block_height"] > finalized
            assert (row["status"], row["confirmations"]) == ("confirming", 3)
            assert await available(conn, 105, "ETH") == 0
            while int(eth_chain.rpc("eth_getBlockByNumber", "finalized", False)["number"], 16) < row["block_height"]:
                await in_thread(eth_chain.mine, 1)
            await w.run_once()
            assert await available(conn, 105, "ETH") == GWEI
            assert (await deposit_row(conn, txid))["status"] == "credited"
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_followed_outgoing_tx_confirms_and_goes_back_on_reorg(eth_chain: EthChain, db_url: str,
                                                                     eth_setup: dict[str, object]) -> None:
    from watchers.repository import follow_tx, followed_tx_status

    conn = await asyncpg.connect(db_url)
    try:
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            await in_thread(eth_chain.mine, 2)  # blocks below the reorg that the watcher keeps
            await w.run_once()
            # the service's own "withdrawal": a transfer to an address that is not a deposit address
            txid = await in_thread(eth_chain.fund, new_address(), 10**17)
            await follow_tx(conn, chain="eth", network="regtest", txid=txid, purpose="withdrawal:1",
                            required_confirmations=3)
            await follow_tx(conn, chain="eth", network="regtest", txid=txid, purpose="withdrawal:1",
                            required_confirmations=3)  # idempotent
            await in_thread(eth_chain.mine, 1)
            await w.run_once()
            status = await followed_tx_status(conn, chain="eth", network="regtest", txid=txid)
            assert status is not None
            assert (status["status"], status["confirmations"]) == ("confirming", 2)
            mined_in = status["block_hash"]
            await in_thread(eth_chain.reorg, 2, 1)  # re-mined in a new block
            await w.run_once()
            status = await followed_tx_status(conn, chain="eth", network="regtest", txid=txid)
            assert status is not None
            assert (status["status"], status["confirmations"]) == ("confirming", 1)
            assert status["block_hash"] != mined_in
            await in_thread(eth_chain.mine, 2)
            await w.run_once()
            upper = "0x" + txid[2:].upper()  # txids are matched case-insensitively
            status = await followed_tx_status(conn, chain="eth", network="regtest", txid=upper)
            assert status is not None
            assert (status["status"], status["confirmations"]) == ("confirmed", 3)
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_second_watcher_waits_for_the_first(eth_chain: EthChain, db_url: str,
                                                  eth_setup: dict[str, object]) -> None:
    from watchers.runner import RunOptions, run_watcher

    options = RunOptions(chain="eth", network="regtest", database_url=db_url, node_url=eth_chain.url,
                         start_height=int(str(eth_setup["start"])), poll_interval_s=0.05)
    stop_first = asyncio.Event()
    first = asyncio.create_task(run_watcher(options, stop_first))
    await asyncio.sleep(1.0)
    second = asyncio.create_task(run_watcher(dataclasses.replace(options, once=True)))
    await asyncio.sleep(1.0)
    assert not first.done() and not second.done()  # the second one waits for the lock
    stop_first.set()
    await asyncio.wait_for(first, timeout=30)
    progress = await asyncio.wait_for(second, timeout=30)
    assert progress.retries == 0


@pytest.mark.asyncio
async def test_eth_rpc_client_against_the_local_node(eth_chain: EthChain, eth_setup: dict[str, object]) -> None:
    from watchers.errors import ChainRpcError
    from watchers.ethrpc import EthRpcClient

    key = Account.create()
    async with EthRpcClient(eth_chain.url) as client:
        assert await client.chain_id() == int(eth_chain.rpc("eth_chainId"), 16)
        await in_thread(eth_chain.fund, key.address, 10**18)
        latest = await client.block_number()
        assert latest == eth_chain.block_number()
        safe, finalized = await client.tag_height("safe"), await client.tag_height("finalized")
        assert safe is not None and finalized is not None and finalized <= safe <= latest
        assert await client.balance_wei(key.address) == 10**18
        nonce = await client.nonce(key.address)
        tx = {"type": 2, "chainId": await client.chain_id(), "nonce": nonce, "to": new_address(), "value": 10**15,
              "gas": 21000, "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": GWEI}
        signed = Account.sign_transaction(tx, key.key)
        tx_hash = await client.send_raw_transaction(signed.raw_transaction.hex())
        receipt = await client.get_receipt(tx_hash)
        assert receipt is not None and int(receipt["status"], 16) == 1
        token = str(eth_setup["token"])
        mint = await in_thread(eth_chain.mint_erc20, token, key.address, 5)
        height = await client.block_number()
        logs = await client.transfer_logs(height, height, [token])
        assert [entry["transactionHash"].lower() for entry in logs] == [mint.lower()]
        with pytest.raises(ChainRpcError):
            await client.call("no_such_method", [])


@pytest.mark.asyncio
async def test_token_configured_after_start_is_watched(eth_chain: EthChain, db_url: str,
                                                       eth_setup: dict[str, object]) -> None:
    token = await in_thread(eth_chain.deploy_erc20, "Test Coin", "TST")
    gina = new_address()
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            """INSERT INTO assets (code, chain, network, chain_decimals, ledger_decimals, token_contract,
                   required_confirmations, min_deposit, withdrawal_fee, min_withdrawal)
               VALUES ('TST', 'eth', 'regtest', 18, 9, NULL, 1, 1, 1, 1)""")
        await add_addresses(conn, [(106, "eth", gina)], first_index=500)
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            await w.run_once()
            assert "TST" in w.assets
            await conn.execute("UPDATE assets SET token_contract = $1 WHERE code = 'TST'", token.lower())
            tx = await in_thread(eth_chain.mint_erc20, token, gina, 5 * 10**18)
            await w.run_once()
            assert await available(conn, 106, "TST") == 5 * GWEI
            assert (await deposit_row(conn, tx))["asset"] == "TST"
            assert await available(conn, 106, "ETH") == 0
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_tx_followed_after_its_block_was_scanned_is_found(eth_chain: EthChain, db_url: str,
                                                               eth_setup: dict[str, object]) -> None:
    from watchers.repository import follow_tx, followed_tx_status

    conn = await asyncpg.connect(db_url)
    try:
        async with watcher(db_url, "eth", eth_chain.url, int(str(eth_setup["start"]))) as w:
            txid = await in_thread(eth_chain.fund, new_address(), 10**16)  # broadcast and mined at once
            await in_thread(eth_chain.mine, 1)
            await w.run_once()  # the block is scanned before anyone asked to follow the tx
            await follow_tx(conn, chain="eth", network="regtest", txid=txid, purpose="withdrawal:2",
                            required_confirmations=2)
            await w.run_once()
            status = await followed_tx_status(conn, chain="eth", network="regtest", txid=txid)
            assert status is not None
            receipt = eth_chain.rpc("eth_getTransactionReceipt", txid)
            assert (status["status"], status["confirmations"], status["block_hash"]) == (
                "confirmed", 2, receipt["blockHash"].lower())
            await in_thread(eth_chain.mine, 1)
            await w.run_once()
            status = await followed_tx_status(conn, chain="eth", network="regtest", txid=txid)
            assert status is not None and status["status"] == "confirmed"
    finally:
        await conn.close()
