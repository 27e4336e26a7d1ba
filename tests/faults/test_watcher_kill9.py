"""kill -9 of the watcher daemon (`python -m coffer watcher run`) at random points while 200
deposits arrive and mature: after the last restart every deposit is credited exactly once.

The deposits go to 200 users on the local Ethereum chain (auto-mine: one block per deposit,
so credits are spread over ~200 block transactions and the kills land between and inside
them). Then a reorg replaces the last 6 blocks (deeper than the 3 confirmations ETH needs)
and mines their txs again, so credited deposits are orphaned and re-found, with one more
kill while the daemon follows it: still no reversal and no second credit.

Checks: one ledger `deposits` row per payment, state credited, exact amount; every
balance equals the payment and equals the sum of its journal rows (the ledger's audit rule);
the ledger's audit (`ledger.audit.run_audit`) clean; the watcher's own deposit rows all
credited; the block-hash chain contiguous.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from eth_account import Account

from ledger.audit import run_audit
from tests.chain_fixtures import EthChain
from tests.watchers.helpers import add_addresses, seed

DEPOSITS = 200
GWEI = 10**9
REPO = Path(__file__).resolve().parents[2]


def start_daemon(db_url: str, node_url: str, start_height: int, *extra: str,
                 log: Path, grace_s: str = "10", chain: str = "eth") -> subprocess.Popen[bytes]:
    env = dict(os.environ, COFFER_DATABASE_URL=db_url, COFFER_WATCHER_POLL_S="0.05", COFFER_LOG_LEVEL="INFO",
               COFFER_WATCHER_STOP_GRACE_S=grace_s, PYTHONPATH=str(REPO))
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "coffer", "watcher", "run", "--chain", chain, "--network", "regtest",
             "--node-url", node_url, "--start-height", str(start_height), *extra],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


async def credited_count(db_url: str) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM deposits"))
    finally:
        await conn.close()


Daemon = Callable[..., "subprocess.Popen[bytes]"]  # start(*extra args) -> a running watcher daemon


def prepare_addresses(db_url: str, rows: list[tuple[int, str, str]], first_index: int) -> None:
    """The demo assets and markets, and a deposit address per (user, chain, address) row."""
    async def go() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await seed(conn)
            await add_addresses(conn, rows, first_index)
        finally:
            await conn.close()

    asyncio.run(go())


def kill_while_paying(start: Daemon, payer: threading.Thread, rng: random.Random, db_url: str, log: Path,
                      longest_s: float) -> list[int]:
    """Start the daemon and kill -9 it after 0.8..`longest_s` s, again and again until `payer` is
    done and at least 6 kills happened; returns the credited deposits at each kill."""
    kills: list[int] = []
    try:
        while payer.is_alive() or len(kills) < 6:
            daemon = start()
            time.sleep(rng.uniform(0.8, longest_s))
            assert daemon.poll() is None, log.read_text()[-3000:]
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
            kills.append(asyncio.run(credited_count(db_url)))
    finally:
        payer.join(timeout=120)
    return kills


def run_once(start: Daemon, log: Path) -> None:
    """One `--once` pass of the daemon to the tip; it must exit 0."""
    final = start("--once")
    assert final.wait(timeout=120) == 0, log.read_text()[-3000:]


def kill_once_then_finish(start: Daemon, rng: random.Random, log: Path) -> None:
    """While the daemon follows a reorg: one more kill -9, then a `--once` pass."""
    daemon = start()
    time.sleep(rng.uniform(0.5, 1.5))
    os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait(timeout=10)
    run_once(start, log)
    assert "orphaned credited deposits" in log.read_text()


async def assert_watcher_state(conn: asyncpg.Connection, chain: str, start: int, tip: int, deposits: int) -> None:
    """After the kills and the reorg: every watcher deposit credited, none reversed, some seen in an
    orphaned block and again in the new chain, and the block-hash chain contiguous up to the tip."""
    statuses = await conn.fetch("SELECT status, count(*) AS n FROM watcher_deposits GROUP BY status")
    assert {r["status"]: r["n"] for r in statuses} == {"credited": deposits}
    assert await conn.fetchval("SELECT count(*) FROM watcher_alerts WHERE kind = 'deposit_reversed'") == 0
    remined = await conn.fetchval(
        "SELECT count(DISTINCT deposit_key) FROM watcher_observations o WHERE "
        "(SELECT count(*) FROM watcher_observations p WHERE p.deposit_key = o.deposit_key) > 1")
    assert remined >= 1
    heights = [r["height"] for r in await conn.fetch(
        "SELECT height FROM watcher_blocks WHERE chain = $1 ORDER BY height", chain)]
    assert heights == list(range(start, heights[-1] + 1))
    assert heights[-1] == tip


@pytest.mark.slow
def test_kill9_during_200_deposits_credits_each_exactly_once(eth_chain: EthChain, db_url: str,
                                                             tmp_path: Path) -> None:
    rng = random.Random(20261126)
    users = list(range(1001, 1001 + DEPOSITS))
    addresses = [str(Account.create().address) for _ in users]
    amounts_gwei = {u: 1_000_000 + 7 * i for i, u in enumerate(users)}  # all above min_deposit, all distinct

    prepare_addresses(db_url, [(u, "eth", a) for u, a in zip(users, addresses, strict=True)], 5000)
    start = eth_chain.block_number() + 1
    txids: dict[int, str] = {}

    def pay_all() -> None:
        for user, address in zip(users, addresses, strict=True):
            txids[user] = eth_chain.fund(address, amounts_gwei[user] * GWEI + rng.randrange(GWEI))

    payer = threading.Thread(target=pay_all)
    payer.start()
    log = tmp_path / "watcher.log"

    def daemon(*extra: str) -> subprocess.Popen[bytes]:
        return start_daemon(db_url, eth_chain.url, start, *extra, log=log)

    kills = kill_while_paying(daemon, payer, rng, db_url, log, longest_s=3.0)  # credited deposits at each kill
    assert len(txids) == DEPOSITS
    eth_chain.mine(3)  # the last deposit reaches 3 confirmations
    run_once(daemon, log)
    assert asyncio.run(credited_count(db_url)) == DEPOSITS
    # A reorg deeper than the 3 confirmations: the last deposits, already credited, are orphaned
    # and mined again in the new blocks; the daemon is killed once more while it follows it.
    eth_chain.reorg(6, 7)
    kill_once_then_finish(daemon, rng, log)

    async def check() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT deposit_key, user_id, asset, amount, txid, state FROM deposits")
            assert len(rows) == DEPOSITS
            by_txid = {r["txid"]: r for r in rows}
            for user in users:
                row = by_txid[txids[user].lower()]
                assert (row["user_id"], row["asset"], row["amount"], row["state"]) == (
                    user, "ETH", amounts_gwei[user], "credited")
            balances = {(r["user_id"], r["asset"]): int(r["available"]) for r in
                        await conn.fetch("SELECT user_id, asset, available FROM balances")}
            journal = {(r["user_id"], r["asset"]): int(r["s"]) for r in await conn.fetch(
                "SELECT user_id, asset, sum(d_available) AS s FROM balance_journal GROUP BY user_id, asset")}
            assert balances == journal
            assert await run_audit(conn) == []  # the ledger's own audit: clean
            assert balances == {(u, "ETH"): amounts_gwei[u] for u in users}
            await assert_watcher_state(conn, "eth", start, eth_chain.block_number(), DEPOSITS)
        finally:
            await conn.close()

    asyncio.run(check())
    assert len(kills) >= 6
    # the kills were spread over the run: some before all were credited
    assert min(kills) < DEPOSITS, kills


async def _seed(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await seed(conn)
    finally:
        await conn.close()


def test_sigterm_stops_the_daemon_cleanly(eth_chain: EthChain, db_url: str, tmp_path: Path) -> None:
    asyncio.run(_seed(db_url))
    log = tmp_path / "watcher.log"
    daemon = start_daemon(db_url, eth_chain.url, eth_chain.block_number(), log=log)
    deadline = time.monotonic() + 60
    while "resumes at" not in log.read_text() and time.monotonic() < deadline:
        assert daemon.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "watcher stopped" in log.read_text()


def test_sigterm_stops_a_daemon_stuck_on_an_unreachable_node(eth_chain: EthChain, db_url: str,
                                                             tmp_path: Path) -> None:
    from coffer.localservices import free_port

    asyncio.run(_seed(db_url))
    log = tmp_path / "watcher.log"
    dead_node = f"http://127.0.0.1:{free_port()}"
    daemon = start_daemon(db_url, dead_node, 0, log=log, grace_s="0.5")
    deadline = time.monotonic() + 60
    while "retry" not in log.read_text() and time.monotonic() < deadline:  # retrying the dead node
        assert daemon.poll() is None, log.read_text()[-3000:]
        time.sleep(0.1)
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, log.read_text()[-3000:]
    assert "watcher cancelled" in log.read_text()
