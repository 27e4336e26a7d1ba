"""The recovery record as settlement writes it (migration 0107): one `settled_command_runs` row per
batch, a placeholder's taker in `settled_command_takers`; what recovery reads back from them."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.intake import ORDER_COLUMNS
from ledger.recovery import CommandLog, lost_commands
from matcher.protocol import CancelOrder, PlaceOrder
from tests.ledger.flow import add_assets, add_market

SHARD = 9
CANCEL_IID = 10**12


async def _setup(conn: asyncpg.Connection) -> tuple[str, list[int]]:
    """A market with three orders of one user (open, filled, pending; each order's intake id is its
    id) and a cancel request of the first (intake id `CANCEL_IID` + its id); returns the market and
    the order ids."""
    await add_assets(conn)
    m = await add_market(conn)
    await conn.execute("INSERT INTO users (id) VALUES (41) ON CONFLICT DO NOTHING")
    ids = [int(r[0]) for r in await conn.fetch("SELECT nextval('order_ids') FROM generate_series(1, 3)")]
    rows = [(oid, 41, m, None, "buy", "limit", "GTC", False, "cancel_taker", 100, 1, None, "USDT", 100_000, 100_000,
             state, SHARD, oid, 1) for oid, state in zip(ids, ("open", "filled", "pending"), strict=True)]
    await conn.copy_records_to_table("orders", records=rows, columns=ORDER_COLUMNS)
    await conn.execute("INSERT INTO cancel_requests (shard, iid, market, order_id, user_id, ts_ms) "
                       "VALUES ($1, $2, $3, $4, 41, 2)", SHARD, CANCEL_IID + ids[0], m, ids[0])
    await conn.execute("INSERT INTO settlement_offsets (market) VALUES ($1) ON CONFLICT DO NOTHING", m)
    return m, ids


async def _settle(conn: asyncpg.Connection, m: str, base: int, last: int,
                  rows: list[tuple[int, bool, int | None]], completed: frozenset[int]) -> None:
    """Only the command record of a batch (no trades, orders or balances)."""
    commands, takers = CommandLog.arrays(rows, completed)
    await conn.fetch("SELECT * FROM ledger_settle_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                     m, f"{last}-0", last, base, [], [], [], [], commands, takers, [], [])


@pytest.mark.asyncio
async def test_runs_and_a_completed_placeholder_read_back_as_the_commands_in_order(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            m, (o1, o2, o3) = await _setup(conn)
        # batch 1: order o1 opens (seq 1); the batch ends inside a command begun at seq 2 by a
        # maker's self-trade-prevention cancel, its taker not yet known
        await _settle(conn, m, 0, 2, [(1, False, o1), (2, False, None)], frozenset())
        log = CommandLog(m)
        await log.load(conn)
        assert (log.open_start, log.placeholder, log.taker) == (2, 2, None)
        # batch 2: the taker of seq 2 is o2 (it completes the placeholder), then a cancel of o1
        # at seq 4 and order o3 at seq 5, still taking (pending)
        await _settle(conn, m, 2, 5, [(2, False, o2), (4, True, o1), (5, False, o3)], frozenset({2}))
        assert await conn.fetchval("SELECT count(*) FROM settled_command_runs WHERE market = $1", m) == 2
        assert await conn.fetch("SELECT first_seq, is_cancel, oid FROM settled_commands WHERE market = $1 "
                                "ORDER BY first_seq", m) == [(1, False, o1), (2, False, o2), (4, True, o1),
                                                             (5, False, o3)]
        await log.load(conn)
        assert (log.open_start, log.placeholder, log.taker) == (None, None, o3)
        # the engine lost everything after seq 1: the commands behind seqs 2..5, as forwarded
        cmds = await lost_commands(conn, m, 1, 5, {})
        assert [(type(c), c.oid, c.iid) for c in cmds] == [(PlaceOrder, o2, o2), (CancelOrder, o1, CANCEL_IID + o1),
                                                           (PlaceOrder, o3, o3)]
        # from inside a run: only what follows the checkpoint
        assert [c.oid for c in await lost_commands(conn, m, 4, 5, {})] == [o3]
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_a_batch_refused_by_the_offset_records_no_command(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            m, (o1, _o2, _o3) = await _setup(conn)
        with pytest.raises(asyncpg.PostgresError, match="the settlement offset moved"):
            await _settle(conn, m, 7, 9, [(8, False, o1)], frozenset())
        assert await conn.fetchval("SELECT count(*) FROM settled_command_runs WHERE market = $1", m) == 0
        assert await conn.fetchval("SELECT last_seq FROM settlement_offsets WHERE market = $1", m) == 0
    finally:
        await conn.close()
