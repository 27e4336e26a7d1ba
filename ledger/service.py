"""`coffer ledger run`: every intake consumer (one per shard) and settlement consumer (one per
enabled market), and the withdrawal processor when a hot keystore is configured, in one
asyncio process, stopped cleanly by SIGTERM / SIGINT.

Each consumer recovers by itself from PostgreSQL or Redis outages (see their `run`). A stop
signal sets one event; every consumer finishes the batch it is in (its transaction commits
or rolls back as a whole) and returns; then the pool and the Redis client are closed.
Markets added while running are picked up at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

from coffer import gc_policy
from coffer.pgpool import keep_session
from coffer.settings import Settings
from ledger.errors import LedgerError
from ledger.intake import IntakeConsumer
from ledger.repo import load_markets
from ledger.settlement import SettlementConsumer

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

log = logging.getLogger("ledger.service")
READY_LINE = "ledger: consumers running"


async def _withdrawal_processor(pool: object, stop: asyncio.Event) -> None:
    """The withdrawal processor, restarted after a failure so it never takes the consumers down."""
    from ledger.withdrawals_proc.service import run_from_env

    delay_s = 1.0
    while not stop.is_set():
        try:
            await run_from_env(pool, stop)  # type: ignore[arg-type]
            return
        except Exception:
            log.exception("withdrawal processor failed; restarting in %.0f s", delay_s)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay_s)
        except TimeoutError:
            delay_s = min(delay_s * 2, 30.0)


# random_page_cost 1.1: the ledger's working set (balances, live orders, recent trades) is in
# memory, so an index probe costs about what a sequential page read does. With PostgreSQL's default
# (4.0) the planner hashed the whole orders table to update a batch's few thousand orders
# (measured: 90 ms for 5,400 orders of a 100,000-order table, 27 ms through the primary key).
# plan_cache_mode force_custom_plan: every consumer statement takes arrays whose sizes vary by
# orders of magnitude, and asyncpg prepares them once per connection. PostgreSQL switched them to
# a generic plan made while the orders table was nearly empty and kept it as the table grew:
# settlement's order lookup walked a whole market through the (user_id, market) index per batch
# (pg_stat_statements in bench.pipeline: 52 ms a call, 105 s of PostgreSQL's 189 s).
SERVER_SETTINGS = {"random_page_cost": "1.1", "plan_cache_mode": "force_custom_plan"}


async def create_pool(db_url: str, max_size: int) -> asyncpg.Pool:
    """The consumers' connection pool: no per-release reset (`keep_session`), SERVER_SETTINGS."""
    import asyncpg

    return await asyncpg.create_pool(db_url, min_size=2, max_size=max_size, reset=keep_session,
                                     server_settings=SERVER_SETTINGS)


def tune_gc() -> None:
    """Collect reference cycles between batches (coffer/gc_policy.py; the consumer loops call
    `between_batches`). With CPython's default (a collection every 700 net new objects) the
    collector scanned the long-lived objects (settlement's live orders) many times a batch
    (settlement CPU 5.6 s -> 3.6 s for 88,000 trades in `python -m bench.ledger` at a threshold of
    50,000); at 50,000 it still ran inside the big batches of `bench.pipeline`, freeing nothing."""
    gc_policy.install()


ROLES = ("intake", "settlement", "withdrawals")


def parse_roles(text: str) -> frozenset[str]:
    """`intake,settlement` -> the set; refuses an unknown or empty list with what is allowed."""
    roles = frozenset(r.strip() for r in text.split(",") if r.strip())
    unknown = sorted(roles - set(ROLES))
    if unknown or not roles:
        raise LedgerError(f"--roles takes a comma-separated list of {', '.join(ROLES)}; got {text!r}")
    return roles


async def check_shard_count(conn: asyncpg.Connection, redis: Redis, shards: int) -> None:
    """Record the intake's shard count (`intake_config`), refusing a change while any intake stream
    still holds requests after its committed offset: users map to shards by `user_id % shards`, so
    those requests would be stranded (a shard no longer consumed) or overtaken by the same user's
    newer requests on another shard. Offsets of shards no longer used are kept (their intake ids
    go on from there if the count grows again: the engine's watermarks remember them)."""
    from ledger.intake import stream_id_key
    from ledger.intake_protocol import intake_stream

    async with conn.transaction():
        recorded = await conn.fetchval("SELECT shards FROM intake_config FOR UPDATE")
        if recorded is None:  # a database from before intake_config: the offsets show the shards used
            recorded = await conn.fetchval("SELECT max(shard) + 1 FROM intake_offsets")
        if recorded == shards:
            await conn.execute("INSERT INTO intake_config (shards) VALUES ($1) ON CONFLICT DO NOTHING", shards)
            return
        if recorded is not None:
            for r in await conn.fetch("SELECT shard, stream_id FROM intake_offsets ORDER BY shard"):
                tail: Any = await redis.xrevrange(intake_stream(int(r["shard"])), count=1)
                if tail and stream_id_key(tail[0][0].decode()) > stream_id_key(r["stream_id"]):
                    raise LedgerError(
                        f"COFFER_INTAKE_SHARDS is {shards} but the intake ran with {recorded} and "
                        f"{intake_stream(int(r['shard']))} still holds unconsumed requests: run the ledger and the "
                        f"API with COFFER_INTAKE_SHARDS={recorded} until the intake streams are drained")
            log.warning("intake shards: %d -> %d (every intake stream is drained)", recorded, shards)
        await conn.execute("INSERT INTO intake_config (shards) VALUES ($1) "
                           "ON CONFLICT (id) DO UPDATE SET shards = EXCLUDED.shards", shards)


async def run_ledger(settings: Settings, stop: asyncio.Event, *, batch_size: int = 5000,
                     roles: frozenset[str] = frozenset(ROLES)) -> None:
    """Run the consumers of `roles` until `stop`: every intake shard, a settlement consumer per
    enabled market, the withdrawal processor. One process may run them all; `coffer up` runs the
    intake in one process and settlement + withdrawals in another, so the two use both cores (each
    consumer is fenced by its offset row lock, so a role must run in one process only)."""
    import asyncpg
    from redis.asyncio import Redis

    db_url, redis_url = settings.database_url.get(), settings.redis_url.get()
    if not db_url or not redis_url:
        raise LedgerError("coffer ledger run needs COFFER_DATABASE_URL and COFFER_REDIS_URL")
    async with contextlib.AsyncExitStack() as exits:
        redis = Redis.from_url(redis_url)
        exits.push_async_callback(redis.aclose)
        conn = await asyncpg.connect(db_url)
        try:
            markets = sorted(await load_markets(conn))
            if "intake" in roles:
                await check_shard_count(conn, redis, settings.intake_shards)
        finally:
            await conn.close()
        # one connection per intake consumer, two per settlement consumer (its write and, meanwhile,
        # the read of the next batch's orders), and spares for the withdrawal processor
        shards = settings.intake_shards if "intake" in roles else 0
        if "settlement" not in roles:
            markets = []
        pool = await create_pool(db_url, shards + 2 * len(markets) + 4)
        exits.push_async_callback(pool.close)
        intakes = [IntakeConsumer(pool, redis, shard=k, batch_size=batch_size, shards=shards) for k in range(shards)]
        settlements = [SettlementConsumer(pool, redis, market=m, batch_size=batch_size) for m in markets]
        extra = ", withdrawal processor" if "withdrawals" in roles else ""
        print(f"{READY_LINE}: {len(intakes)} intake shard(s), {len(settlements)} market(s){extra}", flush=True)
        async with asyncio.TaskGroup() as tg:
            for c in intakes:
                tg.create_task(c.run(stop))
            for s in settlements:
                tg.create_task(s.run(stop))
            if "withdrawals" in roles:
                tg.create_task(_withdrawal_processor(pool, stop))


def serve(settings: Settings, roles: frozenset[str] = frozenset(ROLES)) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_ledger(settings, stop, roles=roles)

    # to stderr at COFFER_LOG_LEVEL (until now only warnings reached it, through Python's last resort)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tune_gc()
    asyncio.run(main())
    print("ledger: stopped", flush=True)
    return 0
