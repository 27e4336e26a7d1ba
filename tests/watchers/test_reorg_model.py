"""Property test of the daemon's reorg handling against an in-memory reference chain.

Hypothesis draws random runs of payments, mining, reorgs of random depth (orphaned txs either
mined again or dropped) and watcher passes. The chain is a small in-memory model serving
Esplora-shaped txs through the `ChainSource` interface; everything else is real: the
`Watcher`, the repository in PostgreSQL, the wallet's AddressBook, the ledger's
credit/reverse and audit. After every watcher pass: a payment with >= 2 confirmations in the
node's chain is credited exactly once (net of reversals), a payment not in the chain is not
credited, balances equal the net credits, and the ledger's audit is clean.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coffer.localservices import PostgresServer
from ledger.audit import run_audit
from ledger.deposits import credit_deposit, reverse_deposit
from tests.harness import new_database
from tests.watchers.helpers import add_addresses, seed
from wallet.addressbook import AddressBook
from watchers import repository as repo
from watchers.daemon import Watcher, WatcherConfig
from watchers.model import BlockHeader, BlockScan
from watchers.scan import Owner, scan_esplora_txs

USERS = 3
REQUIRED = 2  # demo BTC
_ids = itertools.count(1)


def _hex() -> str:
    return f"{next(_ids):064x}"


@dataclass
class Payment:
    txid: str
    user: int
    amount_sat: int


@dataclass
class ModelChain:
    """Blocks as (hash, payments); height = index. Block 0 is genesis."""

    blocks: list[tuple[str, list[Payment]]] = field(default_factory=lambda: [(_hex(), [])])
    mempool: list[Payment] = field(default_factory=list)

    def mine(self, count: int) -> None:
        for _ in range(count):
            self.blocks.append((_hex(), self.mempool))
            self.mempool = []

    def reorg(self, depth: int, new_blocks: int, drop: set[int]) -> None:
        depth = min(depth, len(self.blocks) - 1)
        orphaned = [p for _, pays in self.blocks[len(self.blocks) - depth:] for p in pays]
        del self.blocks[len(self.blocks) - depth:]
        self.mempool = [p for i, p in enumerate(orphaned) if i not in drop] + self.mempool
        self.mine(new_blocks)

    def where(self) -> dict[str, int]:
        return {p.txid: h for h, (_, pays) in enumerate(self.blocks) for p in pays}


class ModelSource:
    chain = "btc"

    def __init__(self, model: ModelChain, addresses: dict[int, str]) -> None:
        self.model = model
        self.addresses = addresses

    async def tip_height(self) -> int:
        return len(self.model.blocks) - 1

    async def hash_at(self, height: int) -> str:
        return self.model.blocks[height][0]

    async def header_at(self, height: int) -> BlockHeader:
        parent = self.model.blocks[height - 1][0] if height else None
        return BlockHeader(height, self.model.blocks[height][0], parent)

    async def scan(self, header: BlockHeader, owner: Owner) -> BlockScan:
        block_hash, pays = self.model.blocks[header.height]
        assert block_hash == header.block_hash
        txs: list[dict[str, Any]] = [
            {"txid": p.txid, "vout": [{"scriptpubkey_address": self.addresses[p.user], "value": p.amount_sat}],
             "status": {"confirmed": True, "block_hash": block_hash}} for p in pays]
        found, txids = scan_esplora_txs(txs, header=header, network="regtest", asset="BTC", owner=owner)
        return BlockScan(header, tuple(found), txids)

    async def finalized_height(self) -> int | None:
        return None

    def update_assets(self, assets: Any) -> None:
        return None

    async def locate_tx(self, txid: str) -> tuple[int, str] | None:
        return None

    async def aclose(self) -> None:
        return None


op = st.one_of(
    st.tuples(st.just("pay"), st.integers(0, USERS - 1), st.integers(10_000, 90_000)),
    st.tuples(st.just("mine"), st.integers(1, 3)),
    st.tuples(st.just("reorg"), st.integers(1, 5), st.integers(0, 6), st.sets(st.integers(0, 6), max_size=3)),
    st.tuples(st.just("scan")),
)


async def check(conn: asyncpg.Connection, model: ModelChain, payments: list[Payment]) -> None:
    where = model.where()
    tip = len(model.blocks) - 1
    net = {r["txid"]: int(r["n"]) for r in await conn.fetch(
        "SELECT txid, sum(CASE WHEN state = 'credited' THEN 1 ELSE 0 END) AS n FROM deposits GROUP BY txid")}
    for p in payments:
        credited = net.get(p.txid, 0)
        assert credited in (0, 1), (p, credited)
        if p.txid not in where:
            assert credited == 0, f"{p.txid} not in the chain but credited"
        elif tip - where[p.txid] + 1 >= REQUIRED:
            assert credited == 1, f"{p.txid} has {tip - where[p.txid] + 1} confirmations but is not credited"
    expected: dict[int, int] = {}
    for p in payments:
        if net.get(p.txid, 0):
            expected[p.user + 1] = expected.get(p.user + 1, 0) + p.amount_sat
    balances = {int(r["user_id"]): int(r["available"]) for r in await conn.fetch(
        "SELECT user_id, available FROM balances WHERE asset = 'BTC' AND available <> 0")}
    assert balances == expected
    assert await run_audit(conn) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, min_size=5, max_size=25))
def test_random_reorgs_credit_exactly_the_confirmed_payments(pg_server: PostgresServer,
                                                             ops: list[tuple[Any, ...]]) -> None:
    db_url = new_database(pg_server, "reorg_model")
    addresses = {u: f"bcrt1qmodeluser{u}" for u in range(USERS)}

    async def scenario() -> None:
        pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
        conn = await asyncpg.connect(db_url)
        try:
            await seed(conn)
            await add_addresses(conn, [(u + 1, "btc", a) for u, a in addresses.items()], first_index=0)
            assets = await repo.load_assets(conn, "btc", "regtest")
            model = ModelChain()
            w = Watcher(WatcherConfig(chain="btc", network="regtest", start_height=0, retry_delay_s=0.0),
                        pool, ModelSource(model, addresses), AddressBook("btc", "regtest"), assets,
                        credit=credit_deposit, reverse=reverse_deposit)
            payments: list[Payment] = []
            for step in [*ops, ("mine", 2), ("scan",)]:
                if step[0] == "pay":
                    payment = Payment(_hex(), step[1], step[2])
                    payments.append(payment)
                    model.mempool.append(payment)
                elif step[0] == "mine":
                    model.mine(step[1])
                elif step[0] == "reorg":
                    model.reorg(step[1], step[2], step[3])
                else:
                    await w.run_once()
                    await check(conn, model, payments)
        finally:
            await conn.close()
            await pool.close()

    asyncio.run(scenario())
