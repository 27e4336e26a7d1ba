"""Property test: the PostgreSQL-backed window accounting agrees with a naive in-memory model on
random request sequences (amounts, times, the single cap and the rolling window)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signer.policy import Policy, Rule, SignRequest
from signer.policy_store import decide

T0 = datetime(2027, 1, 1, tzinfo=UTC)
WINDOW_S = 600
CAP = 1000
SINGLE = 400
_assets = itertools.count()

requests = st.lists(
    st.tuples(st.integers(min_value=1, max_value=500), st.integers(min_value=0, max_value=300)),
    min_size=1, max_size=12,
)


def model(seq: list[tuple[int, int]]) -> list[bool]:
    approved: list[tuple[datetime, int]] = []
    out = []
    now = T0
    for amount, gap_s in seq:
        now += timedelta(seconds=gap_s)
        used = sum(a for t, a in approved if now - timedelta(seconds=WINDOW_S) < t <= now)
        ok = amount <= SINGLE and used + amount <= CAP
        if ok:
            approved.append((now, amount))
        out.append(ok)
    return out


async def store_decisions(db_url: str, asset: str, seq: list[tuple[int, int]]) -> list[bool]:
    policy = Policy([Rule("single", asset, max_single_chain_units=SINGLE),
                     Rule("window", asset, window_seconds=WINDOW_S, window_cap_chain_units=CAP)])
    conn = await asyncpg.connect(db_url)
    out = []
    try:
        now = T0
        for i, (amount, gap_s) in enumerate(seq):
            now += timedelta(seconds=gap_s)
            async with conn.transaction():
                rec = await decide(conn, policy, SignRequest(f"{asset}-{i}", "model", asset, "btc", "x", amount),
                                   tx_digest=str(i), signer_fingerprint="00000000", now=now)
            out.append(rec.decision.approved)
    finally:
        await conn.close()
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=requests)
def test_store_matches_model(db_url: str, seq: list[tuple[int, int]]) -> None:
    asset = f"MODEL{next(_assets)}"
    assert asyncio.run(store_decisions(db_url, asset, seq)) == model(seq)
