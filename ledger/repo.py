"""Bulk repository statements shared by the consumers: balance locks and upserts, markets.

The functions run on the CALLER's connection (in its transaction, if any). Balance rows are
always locked in the fixed order (user_id, asset) — a locked read with SELECT ... ORDER BY ...
FOR UPDATE (the intake's, ledger/intake.py), `upsert_journal_and` by feeding its rows sorted,
since INSERT ... ON CONFLICT DO UPDATE locks conflicting rows in input order — so intake,
settlement and deposit credits never deadlock each other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import asyncpg

from ledger.errors import BalanceMovedError
from ledger.markets import MARKET_COLUMNS, Market

BalanceKey = tuple[int, str]

# The first parameter number of the `also` statements `upsert_journal_and` runs with a batch's
# balances ($1-$4 are its own).
ALSO_FIRST = 5


async def load_markets(conn: asyncpg.Connection) -> dict[str, Market]:
    rows = await conn.fetch(f"SELECT {MARKET_COLUMNS} FROM markets WHERE enabled")
    return {r["symbol"]: Market.from_row(r) for r in rows}


def balance_arrays(net: dict[BalanceKey, list[int]]) -> tuple[list[list[int]], list[str]]:
    """A batch's net change per (user, asset), without the pairs whose changes cancel out, sorted
    (the lock order): users, available and frozen deltas as one bigint[3][k], and the assets.
    asyncpg checks each element of a 1-D array parameter for being a sub-array (a Python-level
    isinstance call), of a 2-D one only the first row's."""
    keys = sorted(k for k, v in net.items() if v[0] or v[1])
    return [[k[0] for k in keys], [net[k][0] for k in keys], [net[k][1] for k in keys]], [k[1] for k in keys]


async def upsert_journal_and(
    conn: asyncpg.Connection, net: dict[BalanceKey, list[int]], kind: str, ref_id: int,
    also: tuple[str, ...] = (), also_args: tuple[object, ...] = (), *, guard: bool = False,
) -> list[tuple[int, str, int, int]]:
    """`upsert_journal_select` without the extra rows."""
    rows, _ = await upsert_journal_select(conn, net, kind, ref_id, also, also_args, guard=guard)
    return rows


async def upsert_journal_select(
    conn: asyncpg.Connection, net: dict[BalanceKey, list[int]], kind: str, ref_id: int,
    also: tuple[str, ...] = (), also_args: tuple[object, ...] = (), *, guard: bool = False,
    select: str | None = None,
) -> tuple[list[tuple[int, str, int, int]], list[tuple[str, int]]]:
    """Add a batch's net deltas to balances, with the batch's journal rows (as
    `journal.net_journal_rows`: one per (user, asset), in sorted order) and the `also`
    statements (the batch's other data-modifying statements: offset update, order states; their
    parameters start at `ALSO_FIRST`), in ONE statement, so a consumer batch ends in one round
    trip. Balance rows are upserted sorted (fixed lock order); PostgreSQL runs every
    data-modifying CTE exactly once, to completion. Returns the new (user, asset, available,
    frozen) of each touched row.

    `guard`: the batch was computed on balances read WITHOUT a lock (the intake's read
    statement); a row whose available would go below zero while its delta is negative makes the
    statement raise (`ledger_refuse`, migration 0105: nothing of the statement is written, even
    outside a transaction block), and BalanceMovedError is raised (the batch is computed again
    on locked rows). Sound because, besides the consumer itself, only a deposit reversal lowers
    an available balance; everything else concurrent (settlement, deposit credits, withdrawal
    releases) only raises it, which cannot invalidate an accepted freeze.

    `select`: a query of (text, bigint) pairs run in the same statement (its snapshot), returned
    beside the balance rows (the intake's markets' settled seqs)."""
    ints, assets = balance_arrays(net)  # a pair whose changes cancel out writes nothing
    ctes = "".join(f", also{i} AS ({sql})" for i, sql in enumerate(also))
    available = ("CASE WHEN EXCLUDED.available >= 0 OR b.available + EXCLUDED.available >= 0 "
                 "THEN b.available + EXCLUDED.available ELSE ledger_refuse('CF001', format('available balance "
                 "of user %s in %s fell under a batch computed without locks', b.user_id, b.asset)) END"
                 if guard else "b.available + EXCLUDED.available")
    extra = "" if select is None else f" UNION ALL SELECT NULL, x.k, x.v, NULL FROM ({select}) AS x(k, v)"
    if not assets:
        if also or select is not None:
            # alone, their parameters are $1...: shift them down by the six of the combined form
            shift = ALSO_FIRST - 1
            body = (f"WITH {ctes[2:]} " if also else "") + (
                f"SELECT x.k, x.v FROM ({select}) AS x(k, v)" if select is not None else "SELECT 1")
            sql = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) - shift}", body)
            if select is None:
                await conn.execute(sql, *also_args)
            else:
                return [], [(str(r[0]), int(r[1])) for r in await conn.fetch(sql, *also_args)]
        return [], []
    upsert = f"""INSERT INTO balances AS b (user_id, asset, available, frozen)
        SELECT u, a, av, fr FROM d
        ON CONFLICT (user_id, asset) DO UPDATE
            SET available = {available}, frozen = b.frozen + EXCLUDED.frozen
        RETURNING user_id, asset, available, frozen"""
    final = upsert if select is None else (
        f", up AS ({upsert}) SELECT user_id, asset, available, frozen FROM up{extra}")
    try:
        rows = await conn.fetch(
            f"""
        WITH d AS MATERIALIZED (
            SELECT * FROM unnest(($1::bigint[])[1:1], $2::text[], ($1::bigint[])[2:2], ($1::bigint[])[3:3])
                AS d(u, a, av, fr)
        ), j AS (
            INSERT INTO balance_journal (user_id, asset, d_available, d_frozen, kind, ref_id)
            SELECT u, a, av, fr, $3::text, $4::bigint FROM d
        ){ctes}
        {final}
        """,
            ints, assets, kind, ref_id, *also_args,
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == "CF001":  # raised inside the statement: nothing of it was written
            raise BalanceMovedError(str(exc)) from exc
        raise
    balances = [(r[0], r[1], int(r[2]), int(r[3])) for r in rows if r[0] is not None]
    return balances, [(str(r[1]), int(r[2])) for r in rows if r[0] is None]


# A batch with at most this many rows for a table inserts them inside the batch's final
# statement (INSERT ... SELECT FROM unnest, no round trip of its own); a bigger one uses COPY
# (two round trips, but the fastest per row).
INLINE_ROWS = 1000


async def insert_rows(
    conn: asyncpg.Connection, table: str, columns: tuple[str, ...], types: tuple[str, ...],
    rows: Sequence[tuple[object, ...]], also: list[str], also_args: list[Any],
) -> None:
    """Insert `rows` into `table`: COPY now when they are many, else append an
    `INSERT ... SELECT FROM unnest(...)` to `also` / `also_args` (the statements that
    `upsert_journal_and` runs with the batch's balances; parameters numbered from `ALSO_FIRST`)."""
    if not rows:
        return
    if len(rows) > INLINE_ROWS:
        await conn.copy_records_to_table(table, records=rows, columns=columns)
        return
    first = ALSO_FIRST + len(also_args)
    arrays = ", ".join(f"${first + i}::{t}[]" for i, t in enumerate(types))
    also.append(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({arrays})")
    also_args.extend(list(col) for col in zip(*rows, strict=True))
