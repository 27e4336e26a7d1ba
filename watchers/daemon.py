"""The confirmation watcher daemon: follow one chain, record deposits, credit them exactly once.

Loop: refresh the address book, read the node's tip, then for each height above the cursor
fetch the header, check that it extends our block-hash chain, scan it and apply it in one
PostgreSQL transaction (observations, deposit state, confirmations, ledger credits, cursor).
A header that does not extend our tip means a reorg: walk back to the fork point, orphan
everything above it in one transaction, and rescan. A parent mismatch that the node itself
contradicts is an inconsistent answer: logged and retried. When caught up, deposits whose
block was orphaned and not re-mined are dropped (or, if credited, reversed with an alert).
Restart-safe: all progress is in PostgreSQL, so the daemon resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from watchers import repository as repo
from watchers.errors import ChainClientError, InconsistentAnswerError, ReorgTooDeepError
from watchers.hashchain import ForkFinder, HashChain
from watchers.model import AssetRule
from watchers.sources import ChainSource

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("watchers.daemon")


@dataclass(frozen=True, slots=True)
class WatcherConfig:
    chain: str
    network: str
    start_height: int | None = None  # first height to scan when there is no cursor; None: the node's tip
    poll_interval_s: float = 2.0
    retry_delay_s: float = 1.0
    keep_blocks: int = 1000


@dataclass(slots=True)
class Progress:
    blocks: int = 0
    observed: int = 0
    credited: int = 0
    reorgs: int = 0
    reversed: int = 0
    retries: int = 0


class Watcher:
    """One chain, one network. `run_once()` catches up to the tip; `run_forever()` keeps polling."""

    def __init__(
        self,
        config: WatcherConfig,
        pool: asyncpg.Pool,
        source: ChainSource,
        book: Any,
        assets: dict[str, AssetRule],
        *,
        credit: repo.CreditFn,
        reverse: repo.ReverseFn,
    ) -> None:
        self.config = config
        self.pool = pool
        self.source = source
        self.book = book
        self.assets = assets
        self.credit = credit
        self.reverse = reverse
        self.chain = HashChain(config.keep_blocks)
        self.cursor: repo.Cursor | None = None
        self.progress = Progress()
        self._loaded = False

    async def _load(self) -> None:
        async with self.pool.acquire() as conn:
            self.cursor = await repo.load_cursor(conn, self.config.chain, self.config.network)
            self.chain = HashChain(self.config.keep_blocks,
                                   await repo.load_blocks(conn, self.config.chain, self.config.network))
        if self.cursor is not None and self.chain.hash_at(self.cursor.height) != self.cursor.block_hash:
            raise ReorgTooDeepError("watcher cursor and block-hash chain disagree in the database")
        self._loaded = True
        log.info("%s/%s watcher resumes at %s", self.config.chain, self.config.network,
                 "no cursor" if self.cursor is None else f"height {self.cursor.height} {self.cursor.block_hash}")

    async def _refresh(self) -> None:
        """New deposit addresses and the ledger's current asset rules, before each block is scanned."""
        async with self.pool.acquire() as conn:
            await self.book.refresh(conn)
            assets = await repo.load_assets(conn, self.config.chain, self.config.network)
        if assets != self.assets:  # e.g. a token contract configured after the watcher started
            log.info("%s/%s asset rules changed: %s", self.config.chain, self.config.network, sorted(assets))
            self.assets = assets
            self.source.update_assets(assets)

    async def step(self) -> bool:
        """Do one unit of work; returns False when caught up with the node's tip."""
        if not self._loaded:
            await self._load()
        tip = await self.source.tip_height()
        if self.cursor is None:
            start = tip if self.config.start_height is None else self.config.start_height
            if start > tip:
                return False
            next_height = start
        else:
            next_height = self.cursor.height + 1
        if next_height > tip:
            assert self.cursor is not None
            if tip < self.cursor.height:  # the node's chain got shorter: a reorg to a lower tip
                await self._handle_reorg(tip)
                return True
            if await self.source.hash_at(self.cursor.height) != self.cursor.block_hash:
                await self._handle_reorg(self.cursor.height)
                return True
            await self._reconcile()
            return False
        header = await self.source.header_at(next_height)
        if not self.chain.extends(header):
            tip_height = self.chain.tip
            assert tip_height is not None
            if await self.source.hash_at(tip_height) == self.chain.hash_at(tip_height):
                raise InconsistentAnswerError(
                    f"block {header.block_hash} at {header.height} names parent {header.parent_hash}, "
                    f"but the node still has our block at {tip_height}")
            await self._handle_reorg(tip_height)
            return True
        await self._refresh()
        scan = await self.source.scan(header, self.book.owner)
        finalized = await self.source.finalized_height()
        async with self.pool.acquire() as conn, conn.transaction():
            result = await repo.apply_block(
                conn, chain=self.config.chain, network=self.config.network, scan=scan, assets=self.assets,
                keep_blocks=self.config.keep_blocks, credit=self.credit, finalized_height=finalized)
        self.chain.append(header)
        self.cursor = repo.Cursor(header.height, header.block_hash)
        self.progress.blocks += 1
        self.progress.observed += result.observed
        self.progress.credited += len(result.credited)
        for key in result.credited:  # logged after the commit: a killed transaction logs nothing
            log.info("credited deposit %s at block %d", key, header.height)
        if result.observed:
            log.info("block %d %s: %d deposit outputs seen", header.height, header.block_hash, result.observed)
        return True

    async def _handle_reorg(self, probe_from: int) -> None:
        """Walk back from `probe_from` (<= our tip and <= the node's tip) to the fork point."""
        assert self.cursor is not None
        finder = ForkFinder(self.chain.as_mapping(), probe_from)
        while (height := finder.next_height()) is not None:
            finder.feed(height, await self.source.hash_at(height))
        fork_height = finder.fork_height
        assert fork_height is not None
        fork_hash = self.chain.hash_at(fork_height)
        assert fork_hash is not None
        fork = repo.Cursor(fork_height, fork_hash)
        async with self.pool.acquire() as conn, conn.transaction():
            orphaned_credits = await repo.rewind(conn, chain=self.config.chain, network=self.config.network, fork=fork)
            depth = self.cursor.height - fork_height
            if orphaned_credits:
                await repo.add_alert(
                    conn, chain=self.config.chain, network=self.config.network, kind="deep_reorg",
                    message=f"reorg of depth {depth} above height {fork_height} orphaned "
                            f"{len(orphaned_credits)} credited deposit(s)")
        log.warning("%s/%s reorg: %d block(s) above %d %s orphaned", self.config.chain, self.config.network,
                    depth, fork_height, fork_hash)
        if orphaned_credits:
            # WARNING: they are reversed (ERROR + alert) only if the new chain does not contain them.
            log.warning("reorg of depth %d orphaned credited deposits: %s", depth, ", ".join(orphaned_credits))
        self.chain.rewind(fork_height)
        self.cursor = fork
        self.progress.reorgs += 1

    async def _reconcile(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            reversed_keys = await repo.reconcile(conn, chain=self.config.chain, network=self.config.network,
                                                 reverse=self.reverse)
        self.progress.reversed += len(reversed_keys)
        await self._locate_followed()

    async def _locate_followed(self) -> None:
        """Followed txs still pending: ask the node where they are.

        A tx may be mined in a block the watcher scanned before it was asked to follow it
        (the withdrawals broadcast first, then call follow_tx). Only a block that is in our
        own hash chain counts; anything else waits for the next pass.
        """
        async with self.pool.acquire() as conn:
            pending = await repo.pending_followed(conn, chain=self.config.chain, network=self.config.network)
        if not pending or self.cursor is None:
            return
        for txid in pending:
            where = await self.source.locate_tx(txid)
            if where is None or self.chain.hash_at(where[0]) != where[1]:
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                await repo.place_followed(conn, chain=self.config.chain, network=self.config.network, txid=txid,
                                          block_height=where[0], block_hash=where[1], tip_height=self.cursor.height)

    async def step_safely(self) -> bool:
        """`step`, with node trouble logged and retried later instead of raised."""
        try:
            return await self.step()
        except ReorgTooDeepError as exc:
            async with self.pool.acquire() as conn:
                await repo.add_alert(conn, chain=self.config.chain, network=self.config.network, kind="reorg_too_deep",
                                     message=str(exc))
            log.error("ALERT %s/%s: %s; the watcher stops: operator action needed", self.config.chain,
                      self.config.network, exc)
            raise
        except (InconsistentAnswerError, ChainClientError) as exc:
            self.progress.retries += 1
            log.warning("%s/%s: %s; retrying in %.1f s", self.config.chain, self.config.network, exc,
                        self.config.retry_delay_s)
            await asyncio.sleep(self.config.retry_delay_s)
            return True

    async def run_once(self) -> Progress:
        """Catch up with the node's tip (retrying node trouble), reconcile, and return."""
        while await self.step_safely():
            pass
        return self.progress

    async def run_forever(self, stop: asyncio.Event | None = None) -> Progress:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            if not await self.step_safely():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.config.poll_interval_s)
        return self.progress
