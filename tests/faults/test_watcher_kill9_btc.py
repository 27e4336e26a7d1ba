"""kill -9 of the Bitcoin watcher daemon (`python -m coffer watcher run --chain btc`) at random
points while 120 deposits arrive on the local Esplora regtest chain and mature: after the last
restart every deposit is credited exactly once. Then a reorg deeper than the 2 confirmations BTC
needs orphans credited deposits, whose transactions are mined again in the new blocks; the
daemon is killed once more while it follows: still no reversal and no second credit.

The Ethereum counterpart is test_watcher_kill9.py; this one covers the UTXO path (outputs keyed by
txid:vout, blocks mined by the test a few payments at a time, so kills land inside blocks of
several deposits as well as between blocks)."""

from __future__ import annotations

import asyncio
import random
import subprocess
import threading
import time
from pathlib import Path

import asyncpg
import coincurve
import pytest

from ledger.audit import run_audit
from tests.chain_fixtures import BtcChain
from tests.faults.test_watcher_kill9 import (
    assert_watcher_state,
    credited_count,
    kill_once_then_finish,
    kill_while_paying,
    prepare_addresses,
    run_once,
    start_daemon,
)
from wallet.addresses import p2wpkh_address

DEPOSITS = 120
CONFIRMATIONS = 2  # BTC in ledger/demo.py


@pytest.mark.slow
def test_kill9_during_btc_deposits_credits_each_exactly_once(btc_chain: BtcChain, db_url: str,
                                                            tmp_path: Path) -> None:
    rng = random.Random(20261126)
    users = list(range(3001, 3001 + DEPOSITS))
    addresses = [p2wpkh_address(coincurve.PrivateKey().public_key.format(compressed=True), "regtest")
                 for _ in users]
    amounts = {u: 20_000 + 13 * i for i, u in enumerate(users)}  # sat: above min_deposit, all distinct

    prepare_addresses(db_url, [(u, "btc", a) for u, a in zip(users, addresses, strict=True)], 7000)
    start = btc_chain.tip_height() + 1
    txids: dict[int, str] = {}

    def pay_all() -> None:
        for i, (user, address) in enumerate(zip(users, addresses, strict=True)):
            txids[user] = btc_chain.faucet(address, amounts[user])
            if i % 4 == 3:
                btc_chain.mine(1)
                time.sleep(0.02)
        btc_chain.mine(1)

    payer = threading.Thread(target=pay_all)
    payer.start()
    log = tmp_path / "watcher-btc.log"

    def daemon(*extra: str) -> subprocess.Popen[bytes]:
        return start_daemon(db_url, btc_chain.url, start, *extra, log=log, chain="btc")

    kills = kill_while_paying(daemon, payer, rng, db_url, log, longest_s=2.5)  # credited deposits at each kill
    assert len(txids) == DEPOSITS
    btc_chain.mine(CONFIRMATIONS)  # the last deposits reach their confirmations
    run_once(daemon, log)
    assert asyncio.run(credited_count(db_url)) == DEPOSITS
    # a reorg deeper than the 2 confirmations: credited deposits are orphaned and mined again
    btc_chain.reorg(4, 5)
    kill_once_then_finish(daemon, rng, log)

    async def check() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT user_id, asset, amount, txid, output_index, state FROM deposits")
            assert len(rows) == DEPOSITS
            by_txid = {r["txid"]: r for r in rows}
            for user in users:
                row = by_txid[txids[user]]
                assert (row["user_id"], row["asset"], row["amount"], row["state"]) == (
                    user, "BTC", amounts[user], "credited")
            balances = {(r["user_id"], r["asset"]): int(r["available"]) for r in
                        await conn.fetch("SELECT user_id, asset, available FROM balances")}
            assert balances == {(u, "BTC"): amounts[u] for u in users}
            assert await run_audit(conn) == []  # the ledger's own audit: clean
            await assert_watcher_state(conn, "btc", start, btc_chain.tip_height(), DEPOSITS)
        finally:
            await conn.close()

    asyncio.run(check())
    assert len(kills) >= 6
    assert min(kills) < DEPOSITS, kills  # the kills were spread over the run
