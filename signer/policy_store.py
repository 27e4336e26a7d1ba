"""PostgreSQL state of the hot-signing policy: decisions recorded, windows summed, per-asset serialisation.

Tables (migration 0400): `signer_decisions` (one row per request id: who, what, which rule,
approved or not, the unsigned transaction's digest and, once signed, its txid) and
`signer_policy_locks` (one row per asset, locked FOR UPDATE while deciding, so two concurrent
requests for the same asset cannot both fit into the room left in a window). Functions take a
connection and run inside the CALLER's transaction; they never commit. asyncpg is imported only
for typing, so the cold CLI never loads this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from signer.policy import Decision, Policy, SignRequest

if TYPE_CHECKING:
    import asyncpg


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    decision: Decision
    decided_at: datetime
    replayed: bool  # True when this request id was already decided (no new row, nothing counted twice)
    tx_digest: str
    txid: str | None


async def _lock_asset(conn: asyncpg.Connection, asset: str) -> None:
    await conn.execute("INSERT INTO signer_policy_locks (asset) VALUES ($1) ON CONFLICT DO NOTHING", asset)
    await conn.execute("SELECT asset FROM signer_policy_locks WHERE asset = $1 FOR UPDATE", asset)


async def window_usage(
    conn: asyncpg.Connection, asset: str, windows: tuple[int, ...], now: datetime
) -> dict[int, int]:
    """Approved amount (chain units) of `asset` in each of the last `windows` seconds before `now`."""
    used: dict[int, int] = {}
    for seconds in windows:
        total = await conn.fetchval(
            "SELECT coalesce(sum(amount_chain_units), 0) FROM signer_decisions "
            "WHERE asset = $1 AND approved AND decided_at > $2 AND decided_at <= $3",
            asset, now - timedelta(seconds=seconds), now,
        )
        used[seconds] = int(total)
    return used


async def decide(
    conn: asyncpg.Connection,
    policy: Policy,
    request: SignRequest,
    *,
    tx_digest: str,
    signer_fingerprint: str,
    now: datetime | None = None,
) -> RecordedDecision:
    """Evaluate and record a decision for `request` inside the caller's transaction.

    Serialised per asset by a row lock held until the caller commits. A request id seen before
    returns its recorded decision (a retry never counts twice); reusing a request id for a
    different transaction is refused. `now` defaults to the database clock.
    """
    await _lock_asset(conn, request.asset)
    previous = await conn.fetchrow(
        "SELECT approved, rule, reason, decided_at, tx_digest, txid FROM signer_decisions WHERE request_id = $1",
        request.request_id,
    )
    if previous is not None:
        if previous["tx_digest"] != tx_digest:
            refused = Decision(False, None, f"request id {request.request_id} was already used for another transaction")
            return RecordedDecision(refused, previous["decided_at"], True, tx_digest, None)
        decision = Decision(previous["approved"], previous["rule"], previous["reason"])
        return RecordedDecision(decision, previous["decided_at"], True, tx_digest, previous["txid"])
    if now is None:
        now = await conn.fetchval("SELECT clock_timestamp()")
    used = await window_usage(conn, request.asset, policy.windows_for(request.asset), now)
    decision = policy.evaluate(request, used)
    await conn.execute(
        """
        INSERT INTO signer_decisions (request_id, decided_at, requested_by, asset, chain, destination,
                                      amount_chain_units, approved, rule, reason, signer_fingerprint, tx_digest)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        """,
        request.request_id, now, request.requested_by, request.asset, request.chain, request.destination,
        Decimal(request.amount_chain_units), decision.approved, decision.rule, decision.reason,
        signer_fingerprint, tx_digest,
    )
    return RecordedDecision(decision, now, False, tx_digest, None)


async def record_refusal(
    conn: asyncpg.Connection,
    request: SignRequest,
    *,
    rule: str,
    reason: str,
    tx_digest: str,
    signer_fingerprint: str,
    now: datetime | None = None,
) -> None:
    """Record a request refused before policy evaluation (e.g. the transaction failed its checks)."""
    await conn.execute(
        """
        INSERT INTO signer_decisions (request_id, decided_at, requested_by, asset, chain, destination,
                                      amount_chain_units, approved, rule, reason, signer_fingerprint, tx_digest)
        VALUES ($1, coalesce($2, clock_timestamp()), $3, $4, $5, $6, $7, false, $8, $9, $10, $11)
        ON CONFLICT (request_id) DO NOTHING
        """,
        request.request_id, now, request.requested_by, request.asset, request.chain, request.destination,
        Decimal(max(request.amount_chain_units, 0)), rule, reason, signer_fingerprint, tx_digest,
    )


async def set_txid(conn: asyncpg.Connection, request_id: str, txid: str) -> None:
    """Attach the signed transaction's id to an approved decision."""
    await conn.execute("UPDATE signer_decisions SET txid = $2 WHERE request_id = $1 AND approved", request_id, txid)
