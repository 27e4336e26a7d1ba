"""Ledger throughput through real PostgreSQL and Redis: freezes/s (intake) and settlements/s.

Starts a private PostgreSQL (the test harness settings: fsync=off, full_page_writes=off,
synchronous_commit on) and a private Redis (AOF everysec), seeds one BTC/USDT market and
`--users` funded users, then
1. freezes: pre-fills `intake{0}` with `--orders` place requests (one request per stream
   entry, as the API writes them) and times one intake consumer draining them: XREAD,
   validation, freeze, COPY of orders and journal, balance upsert, offset, commit, XADD of
   the accepted orders to match:in;
2. settlements: runs those orders through the real pure engine in-process, pre-fills
   `match:out` with the events (1000 a stream entry, as the engine runner batches them) and
   times one settlement consumer draining them (started before phase 1 and stepped once after
   it, untimed, so it has the orders from the intake's new-order feed as it would running beside
   the intake; `settlement_orders_read` counts those it read from PostgreSQL): trades, order
   states, journal, balance upsert, offset, commit, and user events for the users who listen:
   `--online-users` users (default 200, a tenth) are subscribed to their event channels by a `redis-cli` process, as
   WebSocket users would be (`--online-users -1`: a pattern subscriber, events for everyone).
Prints one JSON object on the last line. Run: python -m bench.ledger [--orders N]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import shutil
import subprocess
import time
from typing import Any

from coffer.localservices import PostgresServer, RedisServer


async def _run(db_url: str, redis_url: str, n_orders: int, n_users: int, batch: int,
               profile: str | None = None) -> dict[str, Any]:
    from redis.asyncio import Redis

    from coffer import gc_policy
    from ledger.audit import run_audit
    from ledger.demo import seed_demo
    from ledger.intake import IntakeConsumer
    from ledger.intake_protocol import BATCH_FIELD, PlaceOrderRequest, encode_requests, intake_stream
    from ledger.service import create_pool, tune_gc
    from ledger.settlement import SettlementConsumer
    from matcher import keys
    from matcher.engine import Engine
    from matcher.protocol import BATCH_FIELD as MATCH_FIELD
    from matcher.protocol import Event, decode_commands, encode_batch

    tune_gc()  # as `coffer ledger run` does
    pool = await create_pool(db_url, 4)
    redis = Redis.from_url(redis_url)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await seed_demo(conn, network="regtest", usdt_contract=None)
            users = list(range(1, n_users + 1))
            await conn.copy_records_to_table("users", records=[(u,) for u in users], columns=("id",))
            rows = [(u, a, 10**15, 0) for u in users for a in ("BTC", "USDT")]
            await conn.copy_records_to_table("balances", records=rows,
                                             columns=("user_id", "asset", "available", "frozen"))
            await conn.copy_records_to_table(
                "deposits", records=[(f"b{u}{a}", u, a, 10**15, "bench", 0, "credited") for u, a, _, _ in rows],
                columns=("deposit_key", "user_id", "asset", "amount", "txid", "output_index", "state"))
            await conn.execute(
                "INSERT INTO balance_journal (user_id, asset, d_available, d_frozen, kind, ref_id) "
                "SELECT user_id, asset, amount, 0, 'deposit', id FROM deposits")
        # every 5th order a maker sell of 0.01 BTC at 30000.0; the rest taker buys of 0.001-0.003 BTC
        # at 30000.5 (filled below their limit: price-improvement refunds)
        pipe = redis.pipeline(transaction=False)
        for i in range(n_orders):
            u = users[i % n_users]
            if i % 5 == 0:
                req = PlaceOrderRequest(f"r{i}", "", u, "BTC-USDT", "sell", "limit", "30000", "0.01", None, i)
            else:
                req = PlaceOrderRequest(f"r{i}", "", u, "BTC-USDT", "buy", "limit", "30000.5",
                                        f"0.00{1 + i % 3}", None, i, client_order_id=f"c{i}")
            pipe.xadd(intake_stream(0), {BATCH_FIELD: encode_requests([req])})
            if len(pipe) >= 5000:
                await pipe.execute()
        await pipe.execute()

        intake = IntakeConsumer(pool, redis, shard=0, batch_size=batch)
        await intake.start()
        # started before the orders come, as `coffer ledger run` runs it: it takes them from the
        # new-order feed (ledger/order_feed.py) instead of reading them back
        settle = SettlementConsumer(pool, redis, market="BTC-USDT", batch_size=max(1, batch // 1000))
        await settle.start()
        prof = cProfile.Profile() if profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        while await intake.step(block_ms=0):
            gc_policy.between_batches()  # as RecoveringLoop.run does
        await intake.flush_events()
        if prof:
            prof.disable()
            prof.dump_stats(f"{profile}.intake")
        freeze_s, freeze_cpu = time.perf_counter() - t0, time.process_time() - c0
        accepted = await pool.fetchval("SELECT count(*) FROM orders")
        # the settlement consumer runs beside the intake (as under `coffer ledger run`), so it has
        # taken the new-order feed's entries by the time the engine's events come: one step now
        # (no events yet) does that here, outside both timed phases
        assert await settle.step(block_ms=0) == 0

        engine = Engine()
        events: list[Event] = []
        raw: Any = await redis.xrange(keys.match_in("BTC-USDT"))
        for _id, fields in raw:
            for cmd in decode_commands(fields[MATCH_FIELD]):
                events.extend(engine.apply(cmd))
        pipe = redis.pipeline(transaction=False)
        for i in range(0, len(events), 1000):
            pipe.xadd(keys.match_out("BTC-USDT"), {MATCH_FIELD: encode_batch(events[i:i + 1000])})
        await pipe.execute()
        n_trades = sum(1 for e in events if e.e == "trade")

        prof = cProfile.Profile() if profile else None
        t0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        while await settle.step(block_ms=0):
            gc_policy.between_batches()
        await settle.flush_events()
        if prof:
            prof.disable()
            prof.dump_stats(f"{profile}.settle")
        settle_s, settle_cpu = time.perf_counter() - t0, time.process_time() - c0
        settled = await pool.fetchval("SELECT count(*) FROM trades")
        async with pool.acquire() as conn:
            diffs = await run_audit(conn)
        return {
            "orders": n_orders, "accepted": accepted, "users": n_users, "intake_batch_entries": batch,
            "freeze_seconds": round(freeze_s, 3), "freeze_consumer_cpu_seconds": round(freeze_cpu, 3),
            "freezes_per_s": round(accepted / freeze_s),
            "events": len(events), "trades": n_trades, "trades_settled": settled,
            "settle_seconds": round(settle_s, 3), "settlement_orders_read": settle.orders_read,
            "settle_consumer_cpu_seconds": round(settle_cpu, 3),
            "settlements_per_s": round(settled / settle_s),
            "settlement_events_per_s": round(len(events) / settle_s),
            "audit_differences": len(diffs),
            "postgres": "private, fsync=off, full_page_writes=off, synchronous_commit=on",
            "load_average_1m": round(os.getloadavg()[0], 2),
            "note": "2-core machine shared with other sessions; figures are depressed and noisy",
        }
    finally:
        await redis.aclose()
        await pool.close()


def _listen(redis_url: str, users: int) -> subprocess.Popen[bytes] | None:
    """A `redis-cli` process subscribed to the event channels of users 1..`users` (all users with a
    pattern subscription when `users` < 0), discarding what it hears; None for 0. A process of its
    own, so its work is not counted as the consumers' CPU."""
    from ledger.intake_protocol import user_events_channel

    if users == 0:
        return None
    args = (["PSUBSCRIBE", user_events_channel(0).removesuffix("0") + "*"] if users < 0 else
            ["SUBSCRIBE", *[user_events_channel(u) for u in range(1, users + 1)]])
    proc = subprocess.Popen(["redis-cli", "-u", redis_url, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)  # subscribed before the first batch
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=10_000, help="intake stream entries per XREAD/transaction")
    parser.add_argument("--online-users", type=int, default=200,
                        help="users 1..N listening on their event channels (default 200; -1: a pattern subscriber)")
    parser.add_argument("--profile", help="write cProfile stats of the two timed phases to PATH.intake / PATH.settle")
    args = parser.parse_args()
    from coffer.event_loop import install

    loop_name = install()  # as the coffer processes do (coffer/event_loop.py)
    from tests.harness import make_tempdir, new_database

    pg = PostgresServer(make_tempdir("coffer-bench-pg-"), fast_unsafe=True)
    rs = RedisServer(make_tempdir("coffer-bench-redis-"))
    pg.start()
    rs.start()
    listener = _listen(rs.url, args.online_users)
    try:
        db_url = new_database(pg, "bench_ledger")
        result = asyncio.run(_run(db_url, rs.url, args.orders, args.users, args.batch, args.profile))
    finally:
        if listener is not None:
            listener.terminate()
            listener.wait()
        rs.stop()
        pg.stop()
        for server in (pg, rs):  # the data directories (a PostgreSQL cluster each run)
            shutil.rmtree(server.directory, ignore_errors=True)
    result["online_users"] = "all (pattern subscriber)" if args.online_users < 0 else args.online_users
    print(json.dumps({**result, "event_loop": loop_name}))


if __name__ == "__main__":
    main()
