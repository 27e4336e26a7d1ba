"""ETH and ERC-20 (USDT) withdrawals end to end on the local EVM chain, with the nonce manager:
request -> hold -> policy -> EIP-1559 build -> sign -> persist -> broadcast -> confirm -> settle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import EthApi
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.withdrawals import env as E

DEST = "0x3535353535353535353535353535353535353535"
DEST2 = "0x00000000000000000000000000000000DeaDBeef"


@pytest.mark.asyncio
async def test_eth_and_erc20_withdrawals(db_url: str, redis_url: str, eth_chain: Any, tmp_path: Path) -> None:
    token = eth_chain.deploy_erc20()
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    env = E.make_env(tmp_path, usdt_contract=token, eth_chain_id=chain_id)
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn, usdt_contract=token)
        proc = Processor(pool, env.signer, ProcessorConfig(poll_s=0.05), btc=None, eth=eth)
        hot = proc.keys.eth_hot_address
        # the hot address holds what deposits swept into it (funded here straight from the faucet)
        fund_eth = eth_chain.fund(hot, 2 * 10**18)
        mint = eth_chain.mint_erc20(token, hot, 500 * 10**6)
        await conn.execute("INSERT INTO users (id) VALUES (7)")
        await E.credit(conn, user_id=7, asset="ETH", amount=2 * 10**9, txid=fund_eth)
        await E.credit(conn, user_id=7, asset="USDT", amount=500 * 10**6, txid=mint)

        w1 = await E.request_withdrawal(db_url, redis_url, user_id=7, asset="ETH", amount="0.1", address=DEST)
        w2 = await E.request_withdrawal(db_url, redis_url, user_id=7, asset="USDT", amount="50", address=DEST2)
        w3 = await E.request_withdrawal(db_url, redis_url, user_id=7, asset="ETH", amount="0.2", address=DEST2)
        assert all(w["state"] == "held" for w in (w1, w2, w3))
        start_nonce = int(eth_chain.rpc("eth_getTransactionCount", hot, "pending"), 16)
        before_dest = int(eth_chain.rpc("eth_getBalance", DEST, "latest"), 16)

        await proc.step()  # build, sign, broadcast all three (the chain mines each at once)
        txs = await conn.fetch("SELECT * FROM wd_txs ORDER BY id")
        # each was mined at once (auto-mining), so the first may already have its 3 confirmations
        assert all(t["state"] in ("broadcast", "confirmed") for t in txs) and len(txs) == 3
        assert sorted(int(t["nonce"]) for t in txs) == [start_nonce, start_nonce + 1, start_nonce + 2]
        assert await conn.fetchval("SELECT next_nonce FROM wd_eth_nonces") == start_nonce + 3
        eth_chain.mine(2)  # 3 confirmations
        await proc.step()
        states = await conn.fetch("SELECT id, state FROM withdrawals ORDER BY id")
        assert [s["state"] for s in states] == ["settled"] * 3

        assert int(eth_chain.rpc("eth_getBalance", DEST, "latest"), 16) - before_dest == 99 * 10**15
        assert int(eth_chain.rpc("eth_getBalance", DEST2, "latest"), 16) == 199 * 10**15
        assert await eth.token_balance(token, DEST2) == 49 * 10**6
        receipt = eth_chain.rpc("eth_getTransactionReceipt", txs[1]["txid"])
        assert int(receipt["status"], 16) == 1 and receipt["to"].lower() == token.lower()
        assert int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16) == start_nonce + 3

        # custody: the hot address holds what was deposited minus what was sent and the gas paid
        fees = sum(int(t["network_fee_chain"]) for t in await conn.fetch("SELECT network_fee_chain FROM wd_txs"))
        assert await eth.balance_wei(hot) == 2 * 10**18 - 99 * 10**15 - 199 * 10**15 - fees
        assert await eth.token_balance(token, hot) == 500 * 10**6 - 49 * 10**6
        bal = await conn.fetch("SELECT asset, available, frozen FROM balances WHERE user_id = 7 ORDER BY asset")
        assert [(b["asset"], b["available"], b["frozen"]) for b in bal] == [
            ("ETH", 2 * 10**9 - 3 * 10**8, 0), ("USDT", 450 * 10**6, 0)]
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()
