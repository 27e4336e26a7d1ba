"""Test helpers that drive the real consumers in lockstep: write intake requests, run the
intake consumer, the engine pump and the settlement consumer until all streams are drained."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.asyncio import Redis

from ledger.audit import run_audit
from ledger.deposits import credit_deposit
from ledger.intake import IntakeConsumer
from ledger.intake_protocol import BATCH_FIELD, Request, encode_requests, intake_stream
from ledger.settlement import SettlementConsumer
from tests.ledger.pump import EnginePump

_market_counter = itertools.count(1)
# A regtest P2WPKH address (BIP173 example program, regtest hrp) for withdrawal requests.
BTC_REGTEST_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


async def add_assets(conn: asyncpg.Connection) -> None:
    """BTC (regtest) and USDT (6 decimals) with the withdrawal settings the consumer tests use."""
    await conn.execute("INSERT INTO assets VALUES ('BTC','btc','regtest',8,8,NULL,2,10000,10000,20000) "
                       "ON CONFLICT DO NOTHING")
    await conn.execute("INSERT INTO assets VALUES ('USDT','eth','regtest',6,6,NULL,3,1,1000000,2000000) "
                       "ON CONFLICT DO NOTHING")


async def add_traders(conn: asyncpg.Connection, buyer: int, seller: int) -> str:
    """The assets, a fresh market, and a buyer funded with USDT and a seller with BTC (10^9 units
    each, deposits keyed by the market); returns the market."""
    await add_assets(conn)
    symbol = await add_market(conn)
    await conn.execute("INSERT INTO users (id) VALUES ($1), ($2) ON CONFLICT DO NOTHING", buyer, seller)
    for k, (user, asset) in enumerate([(buyer, "USDT"), (seller, "BTC")]):
        await credit_deposit(conn, deposit_key=f"{symbol}-{k}", user_id=user, asset=asset, amount=10**9, txid="t",
                             output_index=k)
    return symbol


async def traders_pool(db_url: str, buyer: int, seller: int) -> tuple[asyncpg.Pool, str]:
    """A pool, and a fresh market with a funded buyer and seller (`add_traders`)."""
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=6)
    async with pool.acquire() as conn, conn.transaction():
        symbol = await add_traders(conn, buyer, seller)
    return pool, symbol


@asynccontextmanager
async def traders_flow(db_url: str, redis_url: str, buyer: int, seller: int) -> AsyncIterator[tuple[Pipeline, str]]:
    """A started one-shard `Pipeline` on a fresh market with a funded buyer and seller
    (`traders_pool`), and the market; its pool and Redis client are closed afterwards."""
    pool, symbol = await traders_pool(db_url, buyer, seller)
    redis = Redis.from_url(redis_url)
    try:
        flow = Pipeline(pool, redis, [symbol], shards=1)
        await flow.start()
        yield flow, symbol
    finally:
        await redis.aclose()
        await pool.close()


async def add_market(conn: asyncpg.Connection, *, maker_bps: int = 10, taker_bps: int = 20,
                     min_notional: int = 5_000) -> str:
    """A fresh BTC/USDT market with its own streams: tick 1 USDT, lot 0.001 BTC
    (base_units_per_lot 100000 sat, quote_units_per_tick_lot 1000)."""
    symbol = f"P{next(_market_counter)}-{id(conn) % 100000}"
    await conn.execute(
        "INSERT INTO markets (symbol, base, quote, tick, lot, base_units_per_lot, quote_units_per_tick_lot, "
        "min_notional, maker_fee_bps, taker_fee_bps) "
        "VALUES ($1, 'BTC', 'USDT', '1', '0.001', 100000, 1000, $2, $3, $4)",
        symbol, min_notional, maker_bps, taker_bps)
    return symbol


@dataclass
class Pipeline:
    pool: asyncpg.Pool
    redis: Redis
    markets: list[str]
    shards: int = 2

    async def start(self) -> None:
        self.intakes = [IntakeConsumer(self.pool, self.redis, shard=k) for k in range(self.shards)]
        for c in self.intakes:
            await c.start()
        self.pumps = {m: EnginePump(self.redis, m) for m in self.markets}
        self.settlements = {m: SettlementConsumer(self.pool, self.redis, market=m) for m in self.markets}
        for s in self.settlements.values():
            await s.start()

    async def send(self, shard: int, requests: list[Request]) -> None:
        await self.redis.xadd(intake_stream(shard), {BATCH_FIELD: encode_requests(requests)})

    async def drain_to_engine(self) -> None:
        """Run the intakes and the engine pumps until their streams are drained (not settlement)."""
        for c in self.intakes:
            while await c.step(block_ms=0):
                pass
            await c.flush_events()
        for m in self.markets:
            await self.pumps[m].drain()

    async def audit(self) -> list[Any]:
        """`coffer ledger audit`'s differences (none expected)."""
        async with self.pool.acquire() as conn:
            return await run_audit(conn)

    async def drain(self) -> None:
        await self.drain_to_engine()
        for m in self.markets:
            while await self.settlements[m].step(block_ms=0):
                pass
            await self.settlements[m].flush_events()
