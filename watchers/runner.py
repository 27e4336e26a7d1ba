"""Wiring of one watcher process: database pool, chain client, address book, ledger functions.

`run_watcher(options, stop)` is what `coffer watcher run` calls; tests and `coffer up` can
call it in-process too. The ledger is reached only through `ledger.deposits`
(credit_deposit / reverse_deposit) and the wallet only through `wallet.addressbook`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from watchers.daemon import Progress, Watcher, WatcherConfig
from watchers.errors import WatcherConfigError
from watchers.model import AssetRule
from watchers.retry import RetryPolicy
from watchers.sources import BtcSource, ChainSource, EthSource

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("watchers.runner")


@dataclass(frozen=True, slots=True)
class RunOptions:
    chain: str
    network: str
    database_url: str
    node_url: str
    start_height: int | None = None
    poll_interval_s: float = 2.0
    use_finalized: bool = False
    once: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    keep_blocks: int = 1000


async def run_watcher(options: RunOptions, stop: asyncio.Event | None = None) -> Progress:
    import asyncpg

    from coffer.settings import mask_url
    from ledger.deposits import credit_deposit, reverse_deposit
    from wallet.addressbook import AddressBook
    from watchers import repository as repo

    try:
        pool = await asyncpg.create_pool(options.database_url, min_size=1, max_size=3)
    except (OSError, asyncpg.PostgresError) as exc:
        raise WatcherConfigError(f"cannot connect to PostgreSQL at {mask_url(options.database_url)}: {exc}") from exc
    lock_conn: asyncpg.Connection | None = None
    try:
        lock_conn = await pool.acquire()
        await _single_instance_lock(lock_conn, options.chain, options.network, stop)
        async with pool.acquire() as conn:
            try:
                assets = await repo.load_assets(conn, options.chain, options.network)
                await repo.load_cursor(conn, options.chain, options.network)
            except asyncpg.UndefinedTableError as exc:
                raise WatcherConfigError(f"database schema missing ({exc}): run `coffer db migrate` first") from exc
        if not assets:
            raise WatcherConfigError(f"no assets for chain {options.chain} on network {options.network!r} "
                                     "in the ledger's assets table")
        source = make_source(options, assets)
        try:
            watcher = Watcher(
                WatcherConfig(chain=options.chain, network=options.network, start_height=options.start_height,
                              poll_interval_s=options.poll_interval_s, keep_blocks=options.keep_blocks),
                pool, source, AddressBook(options.chain, options.network), assets,
                credit=credit_deposit, reverse=reverse_deposit,
            )
            if options.once:
                return await watcher.run_once()
            return await watcher.run_forever(stop)
        finally:
            await source.aclose()
    finally:
        if lock_conn is not None:
            await pool.release(lock_conn)  # closing the session releases the advisory lock
        await pool.close()


async def _single_instance_lock(conn: asyncpg.Connection, chain: str, network: str,
                                stop: asyncio.Event | None) -> None:
    """Hold a session advisory lock so only one watcher follows a chain; wait while another does.

    A watcher killed with -9 loses its session (and the lock) as soon as PostgreSQL sees the
    socket close, so a restarted watcher waits only a moment.
    """
    key = f"coffer:watcher:{chain}:{network}"
    waited = False
    while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
        if not waited:
            log.warning("another %s/%s watcher holds the lock; waiting", chain, network)
            waited = True
        if stop is not None and stop.is_set():
            raise WatcherConfigError(f"stopped while waiting for the {chain}/{network} watcher lock")
        await asyncio.sleep(0.2)


def make_source(options: RunOptions, assets: Mapping[str, AssetRule]) -> ChainSource:
    from watchers.esplora import EsploraClient
    from watchers.ethrpc import EthRpcClient
    rules = dict(assets)
    if options.chain == "btc":
        return BtcSource(EsploraClient(options.node_url, policy=options.retry), network=options.network, assets=rules)
    if options.chain == "eth":
        return EthSource(EthRpcClient(options.node_url, policy=options.retry), network=options.network,
                         assets=rules, use_finalized=options.use_finalized)
    raise WatcherConfigError(f"unknown chain {options.chain!r} (btc or eth)")
