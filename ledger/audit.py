"""The audit: proves that every balance is explained by the durable records.

Checks, each listing every difference it finds:
1. journal   — each (user, asset) balance equals the sum of its balance_journal rows;
   trades    — the settlement rows of each (user, asset) add up to what the user's trades
               moved (received minus fee, paid); intake rows only move funds between
               available and frozen;
2. holds     — each frozen balance equals what the user's orders (frozen_remaining) and
               unfinished withdrawals (amount) hold; frozen is never negative; a finished
               order holds nothing;
3. assets    — per asset: users' balances (available + frozen) + fee income (trade fees
               taken in that asset + fees of settled withdrawals)
               = credited deposits (not reversed) - settled withdrawals (amount - fee sent);
4. references — every order names a known user and market, every settled command a known
               market (these hot-path tables carry no foreign keys: migration 0103).
Read-only; run it in a REPEATABLE READ transaction for one consistent snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class Difference:
    check: str
    asset: str
    user_id: int | None
    expected: int
    actual: int
    detail: str = ""

    def __str__(self) -> str:
        who = f"user {self.user_id} " if self.user_id is not None else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.check}: {who}{self.asset}: expected {self.expected}, found {self.actual}{extra}"


async def run_audit(conn: asyncpg.Connection) -> list[Difference]:
    """All differences (empty = clean). Opens its own read-only snapshot transaction."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _audit(conn)


async def _audit(conn: asyncpg.Connection) -> list[Difference]:
    out: list[Difference] = []
    rows = await conn.fetch(
        """
        WITH j AS (SELECT user_id, asset, sum(d_available) AS av, sum(d_frozen) AS fr
                     FROM balance_journal GROUP BY user_id, asset)
        SELECT coalesce(b.user_id, j.user_id) AS user_id, coalesce(b.asset, j.asset) AS asset,
               coalesce(b.available, 0) AS b_av, coalesce(b.frozen, 0) AS b_fr,
               coalesce(j.av, 0) AS j_av, coalesce(j.fr, 0) AS j_fr
          FROM balances b FULL OUTER JOIN j ON j.user_id = b.user_id AND j.asset = b.asset
         WHERE coalesce(b.available, 0) <> coalesce(j.av, 0) OR coalesce(b.frozen, 0) <> coalesce(j.fr, 0)
        """
    )
    for r in rows:
        if r["b_av"] != r["j_av"]:
            out.append(Difference("journal", r["asset"], r["user_id"], int(r["j_av"]), int(r["b_av"]), "available"))
        if r["b_fr"] != r["j_fr"]:
            out.append(Difference("journal", r["asset"], r["user_id"], int(r["j_fr"]), int(r["b_fr"]), "frozen"))
    rows = await conn.fetch(
        """
        WITH h AS (
            SELECT user_id, frozen_asset AS asset, sum(frozen_remaining) AS held FROM orders
             GROUP BY user_id, frozen_asset
            UNION ALL
            SELECT user_id, asset, sum(amount) FROM withdrawals WHERE state NOT IN ('settled', 'released')
             GROUP BY user_id, asset),
        hs AS (SELECT user_id, asset, sum(held) AS held FROM h GROUP BY user_id, asset)
        SELECT coalesce(b.user_id, hs.user_id) AS user_id, coalesce(b.asset, hs.asset) AS asset,
               coalesce(b.frozen, 0) AS frozen, coalesce(hs.held, 0) AS held
          FROM balances b FULL OUTER JOIN hs ON hs.user_id = b.user_id AND hs.asset = b.asset
         WHERE coalesce(b.frozen, 0) <> coalesce(hs.held, 0) OR coalesce(b.frozen, 0) < 0
        """
    )
    for r in rows:
        out.append(Difference("holds", r["asset"], r["user_id"], int(r["held"]), int(r["frozen"]), "frozen"))
    rows = await conn.fetch(
        "SELECT id, user_id, frozen_asset, frozen_remaining, state FROM orders "
        "WHERE state NOT IN ('pending', 'open') AND frozen_remaining <> 0 LIMIT 100"
    )
    for r in rows:
        out.append(Difference("holds", r["frozen_asset"], r["user_id"], 0, int(r["frozen_remaining"]),
                              f"order {r['id']} is {r['state']} but still holds funds"))
    rows = await conn.fetch(
        """
        WITH t AS (
            SELECT t.buyer AS user_id, m.base AS asset, t.base_amount - t.buyer_fee AS v
              FROM trades t JOIN markets m ON m.symbol = t.market
            UNION ALL
            SELECT t.buyer, m.quote, -t.quote_amount FROM trades t JOIN markets m ON m.symbol = t.market
            UNION ALL
            SELECT t.seller, m.base, -t.base_amount FROM trades t JOIN markets m ON m.symbol = t.market
            UNION ALL
            SELECT t.seller, m.quote, t.quote_amount - t.seller_fee
              FROM trades t JOIN markets m ON m.symbol = t.market),
        ts AS (SELECT user_id, asset, sum(v) AS v FROM t GROUP BY user_id, asset),
        js AS (SELECT user_id, asset, sum(d_available + d_frozen) AS v FROM balance_journal
                WHERE kind = 'settle' GROUP BY user_id, asset)
        SELECT coalesce(ts.user_id, js.user_id) AS user_id, coalesce(ts.asset, js.asset) AS asset,
               coalesce(ts.v, 0) AS from_trades, coalesce(js.v, 0) AS journal
          FROM ts FULL OUTER JOIN js ON js.user_id = ts.user_id AND js.asset = ts.asset
         WHERE coalesce(ts.v, 0) <> coalesce(js.v, 0)
        """
    )
    for r in rows:
        out.append(Difference("trades", r["asset"], r["user_id"], int(r["from_trades"]), int(r["journal"]),
                              "settlement journal vs what the user's trades moved"))
    rows = await conn.fetch(
        "SELECT user_id, asset, sum(d_available + d_frozen) AS v FROM balance_journal WHERE kind = 'intake' "
        "GROUP BY user_id, asset HAVING sum(d_available + d_frozen) <> 0"
    )
    for r in rows:
        out.append(Difference("intake", r["asset"], r["user_id"], 0, int(r["v"]),
                              "freezes and holds must only move funds between available and frozen"))
    rows = await conn.fetch(
        """
        WITH users_total AS (SELECT asset, sum(available + frozen) AS v FROM balances GROUP BY asset),
        fees AS (
            SELECT m.base AS asset, sum(t.buyer_fee) AS v FROM trades t JOIN markets m ON m.symbol = t.market
             GROUP BY m.base
            UNION ALL
            SELECT m.quote, sum(t.seller_fee) FROM trades t JOIN markets m ON m.symbol = t.market GROUP BY m.quote
            UNION ALL
            SELECT asset, sum(fee) FROM withdrawals WHERE state = 'settled' GROUP BY asset),
        fee_total AS (SELECT asset, sum(v) AS v FROM fees GROUP BY asset),
        dep AS (SELECT asset, sum(amount) AS v FROM deposits WHERE state = 'credited' GROUP BY asset),
        wd AS (SELECT asset, sum(amount - fee) AS v FROM withdrawals WHERE state = 'settled' GROUP BY asset)
        SELECT a.code AS asset, coalesce(u.v, 0) AS users, coalesce(f.v, 0) AS fees,
               coalesce(d.v, 0) AS deposits, coalesce(w.v, 0) AS withdrawn
          FROM assets a
          LEFT JOIN users_total u ON u.asset = a.code LEFT JOIN fee_total f ON f.asset = a.code
          LEFT JOIN dep d ON d.asset = a.code LEFT JOIN wd w ON w.asset = a.code
         ORDER BY a.code
        """
    )
    for r in rows:
        lhs = int(r["users"]) + int(r["fees"])
        rhs = int(r["deposits"]) - int(r["withdrawn"])
        if lhs != rhs:
            out.append(Difference("assets", r["asset"], None, rhs, lhs,
                                  f"balances {r['users']} + fees {r['fees']} vs deposits {r['deposits']} "
                                  f"- withdrawn {r['withdrawn']}"))
    rows = await conn.fetch(
        """
        SELECT 'order ' || o.id AS what, o.user_id, o.market AS name FROM orders o
         WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id)
            OR NOT EXISTS (SELECT 1 FROM markets m WHERE m.symbol = o.market)
        UNION ALL
        SELECT 'settled command run ' || c.first_seq, NULL, c.market FROM settled_command_runs c
         WHERE NOT EXISTS (SELECT 1 FROM markets m WHERE m.symbol = c.market)
        LIMIT 100
        """
    )
    for r in rows:
        out.append(Difference("references", r["name"], r["user_id"], 1, 0,
                              f"{r['what']} names an unknown user or market"))
    return out


async def asset_totals(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    """Per asset (users' balances, fee income) — for the audit's summary line."""
    rows = await conn.fetch("SELECT asset, sum(available + frozen) AS v FROM balances GROUP BY asset")
    fees = await conn.fetch(
        "SELECT m.base AS asset, sum(t.buyer_fee) AS v FROM trades t JOIN markets m ON m.symbol = t.market "
        "GROUP BY m.base UNION ALL SELECT m.quote, sum(t.seller_fee) FROM trades t JOIN markets m "
        "ON m.symbol = t.market GROUP BY m.quote")
    fee: dict[str, int] = {}
    for f in fees:
        fee[f["asset"]] = fee.get(f["asset"], 0) + int(f["v"])
    return {r["asset"]: (int(r["v"]), fee.get(r["asset"], 0)) for r in rows}
