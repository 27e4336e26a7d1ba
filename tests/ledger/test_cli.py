"""`coffer ledger audit` exits 0 on a clean book and 1 with the differences printed when a
balance is not explained; `coffer ledger run` serves orders end to end and stops cleanly
on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from ledger.deposits import credit_deposit
from ledger.intake_protocol import BATCH_FIELD, PlaceOrderRequest, encode_requests, intake_stream

ROOT = Path(__file__).resolve().parents[2]


async def _coffer(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "coffer", *args, cwd=ROOT, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_audit_cli_clean_then_tampered(db_url: str) -> None:
    env = {"COFFER_DATABASE_URL": db_url}
    rc, out, _ = await _coffer("ledger", "seed-demo", "--network", "regtest", env=env)
    assert rc == 0, out
    conn = await asyncpg.connect(db_url)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO users (id) VALUES (11) ON CONFLICT DO NOTHING")
            await credit_deposit(conn, deposit_key="cli-1", user_id=11, asset="BTC", amount=12345, txid="t",
                                 output_index=0)
        rc, out, err = await _coffer("ledger", "audit", env=env)
        assert rc == 0 and "audit clean" in out, (out, err)
        await conn.execute("UPDATE balances SET available = available + 5 WHERE user_id = 11 AND asset = 'BTC'")
        rc, out, err = await _coffer("ledger", "audit", env=env)
        assert rc == 1
        assert "DIFFERENCE journal: user 11 BTC: expected 12345, found 12350" in out
        assert "DIFFERENCE assets" in out
        assert err.startswith("coffer: error: audit found") and "Traceback" not in err
        await conn.execute("UPDATE balances SET available = available - 5 WHERE user_id = 11 AND asset = 'BTC'")
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_run_cli_freezes_and_stops_on_sigterm(db_url: str, redis_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    redis = Redis.from_url(redis_url)
    proc: asyncio.subprocess.Process | None = None
    try:
        async with conn.transaction():
            from ledger.demo import seed_demo

            await seed_demo(conn, network="regtest", usdt_contract=None)
            await conn.execute("INSERT INTO users (id) VALUES (21) ON CONFLICT DO NOTHING")
            await credit_deposit(conn, deposit_key="cli-21", user_id=21, asset="USDT", amount=100_000_000,
                                 txid="t", output_index=0)
        env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_REDIS_URL": redis_url,
               "COFFER_INTAKE_SHARDS": "2"}
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "coffer", "ledger", "run", cwd=ROOT,
                                                    env=env, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line.startswith(b"ledger: consumers running: 2 intake shard(s)")
        req = PlaceOrderRequest("cli", "", 21, "BTC-USDT", "buy", "limit", "30000", "0.001", None, 1)
        await redis.xadd(intake_stream(21 % 2), {BATCH_FIELD: encode_requests([req])})
        async with asyncio.timeout(30):  # committed, then forwarded to the engine
            while True:
                raw: Any = await redis.xlen("match:in{BTC-USDT}")
                if raw and await conn.fetchval("SELECT count(*) FROM orders WHERE user_id = 21"):
                    break
                await asyncio.sleep(0.05)
        assert raw == 1
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        rest = await proc.stdout.read()
        assert b"ledger: stopped" in rest
        assert await conn.fetchval("SELECT frozen FROM balances WHERE user_id = 21 AND asset = 'USDT'") == 30_000_000
    finally:
        if proc is not None and proc.returncode is None:  # a failed assertion above: do not leave the service running
            proc.kill()
            await proc.wait()
        await redis.aclose()
        await conn.close()


@pytest.mark.asyncio
async def test_run_cli_refuses_unknown_roles() -> None:
    rc, _out, err = await _coffer("ledger", "run", "--roles", "intake,settle", env={})
    assert rc != 0
    assert err.startswith("coffer: error: --roles takes a comma-separated list of intake, settlement, withdrawals")
    assert "'intake,settle'" in err and "Traceback" not in err


def test_parse_roles() -> None:
    from ledger.errors import LedgerError
    from ledger.service import parse_roles

    assert parse_roles("intake") == {"intake"}
    assert parse_roles(" settlement , withdrawals ") == {"settlement", "withdrawals"}
    for bad in ("", ",", "intake,bogus"):
        with pytest.raises(LedgerError, match="--roles takes"):
            parse_roles(bad)
