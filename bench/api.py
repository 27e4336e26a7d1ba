"""Benchmark of the trading API: signed HTTP order placements per second and their latency.

`python -m bench.api` starts a private Redis and PostgreSQL (fsync=off), migrates, seeds the demo
markets, creates `--users` users with API keys and funds, runs `coffer ledger run`,
`coffer matcher run` and `coffer api trading` as child processes (as `coffer up` does), then
`--clients` concurrent signed clients (api/client.py, one key each) place orders for
`--seconds`: mostly resting limit orders with some crossing ones, so the answers are `open`,
`filled` or `partially_filled` from the whole pipeline (a 202 `pending` is counted apart).
Then the same clients make signed `GET /api/v1/balances` reads for `--read-seconds` (the API's
own cost without the order pipeline). Prints as the last line one JSON object:
`placements_per_s`, `p50_ms`, `p99_ms` (client-side, per request), the status counts,
`signed_reads_per_s`, `read_p50_ms`, `read_p99_ms`, CPU seconds per process. The machine is
shared while this runs: figures as measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any


async def _setup(db_url: str, data_dir: Path, users: int) -> list[tuple[str, str]]:
    import asyncpg

    from api.cli_users import create_user_with_key
    from api.secretbox import load_master_key
    from coffer import migrate
    from ledger.demo import seed_demo
    from ledger.deposits import credit_deposit

    conn = await asyncpg.connect(db_url)
    try:
        await migrate.apply(conn)
        async with conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract="0x" + "22" * 20)
    finally:
        await conn.close()
    master = load_master_key("dev", data_dir)
    creds: list[tuple[str, str]] = []
    for _ in range(users):
        user_id, key_id, secret = await create_user_with_key(db_url, master, "bench")
        creds.append((key_id, secret))
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                for asset, amount in (("BTC", 1_000 * 10**8), ("USDT", 10**8 * 10**6)):
                    await credit_deposit(conn, deposit_key=f"bench-api-{asset}-{user_id}", user_id=user_id,
                                         asset=asset, amount=amount, txid=f"benchapi{user_id}", output_index=0)
        finally:
            await conn.close()
    return creds


async def _client_loop(url: str, key_id: str, secret: str, seed: int, until: float,
                       latencies: list[float], statuses: Counter[str]) -> None:
    from api.client import ClientError, CofferClient

    rng = random.Random(seed)
    async with CofferClient(url, key_id, secret, timeout_s=30) as client:
        while time.perf_counter() < until:
            side = rng.choice(("buy", "sell"))
            crossing = rng.random() < 0.2
            off = rng.randint(0, 50) if crossing else rng.randint(1, 500)
            ticks = 300_000 + (off if (side == "buy") == crossing else -off)
            price = f"{ticks // 10}.{ticks % 10}"
            qty = f"0.{rng.randint(100, 1000):05d}"
            t0 = time.perf_counter()
            try:
                body = await client.place_order(market="BTC-USDT", side=side, type="limit", price=price,
                                                quantity=qty)
                statuses[str(body.get("status"))] += 1
            except ClientError as exc:
                statuses[f"http_{exc.status_code}"] += 1
            latencies.append((time.perf_counter() - t0) * 1000)


async def _read_loop(url: str, key_id: str, secret: str, until: float, latencies: list[float]) -> None:
    from api.client import CofferClient

    async with CofferClient(url, key_id, secret, timeout_s=30) as client:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            await client.balances()
            latencies.append((time.perf_counter() - t0) * 1000)


async def _measure(url: str, creds: list[tuple[str, str]], clients: int, seconds: float,
                   read_seconds: float) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(base_url=url) as http:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/api/v1/time")).status_code == 200:
                    break
            await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    t0 = time.perf_counter()
    until = t0 + seconds
    await asyncio.gather(*[
        _client_loop(url, *creds[i % len(creds)], seed=i, until=until, latencies=latencies, statuses=statuses)
        for i in range(clients)
    ])
    elapsed = time.perf_counter() - t0
    reads: list[float] = []
    r0 = time.perf_counter()
    if read_seconds > 0:  # signed reads only: the API's own cost, without the order pipeline
        await asyncio.gather(*[_read_loop(url, *creds[i % len(creds)], until=r0 + read_seconds, latencies=reads)
                               for i in range(clients)])
    read_elapsed = time.perf_counter() - r0

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else float("nan")

    return {"placements_per_s": round(len(latencies) / elapsed, 1), "p50_ms": pct(latencies, 0.5),
            "p99_ms": pct(latencies, 0.99), "requests": len(latencies), "seconds": round(elapsed, 2),
            "clients": clients, "statuses": dict(statuses),
            "signed_reads_per_s": round(len(reads) / read_elapsed, 1) if reads else None,
            "read_p50_ms": pct(reads, 0.5), "read_p99_ms": pct(reads, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--read-seconds", type=float, default=5.0, help="then signed GET /balances (0: skip)")
    args = parser.parse_args()
    from coffer.event_loop import install

    loop_name = install()  # as the coffer processes do (coffer/event_loop.py)

    from coffer.localservices import PostgresServer, RedisServer, free_port
    from coffer.supervisor import terminate_groups

    tmp = Path(tempfile.mkdtemp(prefix="coffer-bench-api-"))
    tmp.chmod(0o755)
    redis_server = RedisServer(tmp / "redis")
    pg_server = PostgresServer(tmp / "pg", fast_unsafe=True)
    procs: list[subprocess.Popen[bytes]] = []
    redis_server.start()
    pg_server.start()
    try:
        db_url = pg_server.url("postgres")
        data_dir = tmp / "data"
        creds = asyncio.run(_setup(db_url, data_dir, args.users))
        port = free_port()
        env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_REDIS_URL": redis_server.url,
               "COFFER_DATA_DIR": str(data_dir), "COFFER_ENV": "dev", "COFFER_LOG_LEVEL": "WARNING",
               "COFFER_API_RATE_PER_S": "100000", "COFFER_INTAKE_SHARDS": "1"}
        env.pop("COFFER_API_MASTER_KEY", None)
        logs = tmp / "logs"
        logs.mkdir()
        for name, argv in (("ledger", ["ledger", "run"]), ("matcher", ["matcher", "run", "--market", "BTC-USDT"]),
                           ("api", ["api", "trading", "--port", str(port)])):
            with open(logs / f"{name}.log", "wb") as log:
                procs.append(subprocess.Popen([sys.executable, "-m", "coffer", *argv], env=env, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        result = asyncio.run(_measure(f"http://127.0.0.1:{port}", creds, args.clients, args.seconds,
                                      args.read_seconds))
        from bench.pipeline import _cpu_s

        result["cpu_s"] = {name: round(_cpu_s(p.pid), 1) for name, p in zip(("ledger", "matcher", "api"), procs,
                                                                               strict=True)}
        result["cpu_s"]["bench_clients"] = round(_cpu_s(os.getpid()), 1)
        result["load_avg_1m"] = round(os.getloadavg()[0], 2)
        result["api_processes"] = 1
        result["settings"] = "postgres fsync=off; redis appendfsync everysec; 2 shared cores; client in-process"
        print(json.dumps({**result, "event_loop": loop_name}))
    finally:
        terminate_groups(procs)
        pg_server.stop()
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
