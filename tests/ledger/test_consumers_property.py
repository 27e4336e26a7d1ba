"""Random sequences through the PostgreSQL-backed consumers vs the naive in-memory model.

Each hypothesis example gets a fresh market (own streams) and fresh users in the module's
database; orders travel intake{k} -> intake consumer -> match:in -> real engine (test pump)
-> match:out -> settlement consumer; deposits, reversals and withdrawal endings go through
their repository functions. After every example the users' balances must equal the
model's, every accept/reject decision must agree, and the global audit must be clean.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from coffer.localservices import RedisServer
from ledger.audit import run_audit
from ledger.demo import seed_demo
from ledger.deposits import credit_deposit, reverse_deposit
from ledger.intake_protocol import CancelRequest, PlaceOrderRequest, WithdrawRequest, shard_for_user
from ledger.markets import units_to_decimal
from ledger.withdrawals import release_withdrawal, settle_withdrawal
from matcher.protocol import decode_events
from tests.ledger.flow import BTC_REGTEST_ADDRESS, Pipeline, add_market
from tests.ledger.model import MMarket, Model

_users = itertools.count(1000, 10)
MM = MMarket("BTC", "USDT", 100_000, 1_000, 5_000, 10, 20)

limit_op = st.tuples(st.just("limit"), st.integers(0, 2), st.sampled_from(["buy", "sell"]), st.integers(8, 12),
                     st.integers(1, 40), st.sampled_from(["GTC", "GTC", "GTC", "IOC"]))
# weights: limit orders 6 of 14, every other kind 1 each
ops = st.lists(
    st.one_of(
        st.integers(0, 5).flatmap(lambda _: limit_op),
        st.tuples(st.just("mbuy"), st.integers(0, 2), st.integers(1, 300)),
        st.tuples(st.just("msell"), st.integers(0, 2), st.integers(1, 30)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("deposit"), st.integers(0, 2), st.sampled_from(["BTC", "USDT"]),
                  st.integers(1, 3_000_000)),
        st.tuples(st.just("reverse"), st.integers(0, 10)),
        st.tuples(st.just("withdraw"), st.integers(0, 2), st.integers(20_000, 2_000_000)),
        st.tuples(st.just("wd_end"), st.integers(0, 10), st.booleans()),
        limit_op,
    ),
    min_size=15, max_size=40,
)


@pytest.fixture(scope="module")
def seeded(db_url: str) -> str:
    async def seed() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                await seed_demo(conn, network="regtest", usdt_contract=None)
        finally:
            await conn.close()

    asyncio.run(seed())
    return db_url


@pytest.mark.slow
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seq=ops)
def test_consumers_match_model(seeded: str, redis_server: RedisServer, seq: list[tuple[Any, ...]]) -> None:
    asyncio.run(_run(seeded, redis_server.url, seq))


async def _run(db_url: str, redis_url: str, seq: list[tuple[Any, ...]]) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    redis = Redis.from_url(redis_url)
    try:
        base = next(_users)
        users = [base + i for i in range(3)]
        model = Model()
        async with pool.acquire() as conn, conn.transaction():
            symbol = await add_market(conn)
            for u in users:
                await conn.execute("INSERT INTO users (id) VALUES ($1)", u)
        flow = Pipeline(pool, redis, [symbol])
        await flow.start()
        deposits: list[tuple[str, int, str, int]] = []
        reversed_keys: set[str] = set()
        wids: list[int] = []
        oids: list[int] = []
        seen_out = "0-0"

        async def deposit(user: int, asset: str, amount: int) -> None:
            key = f"{symbol}:{len(deposits)}"
            async with pool.acquire() as conn, conn.transaction():
                assert await credit_deposit(conn, deposit_key=key, user_id=user, asset=asset, amount=amount,
                                            txid=key, output_index=0)
            deposits.append((key, user, asset, amount))
            model.deposit(user, asset, amount)

        for u in users:
            await deposit(u, "BTC", 5_000_000)
            await deposit(u, "USDT", 3_000_000)
        for i, op in enumerate(seq):
            kind = op[0]
            if kind in ("limit", "mbuy", "msell"):
                user = users[op[1]]
                if kind == "limit":
                    _, _, side, price, qty, tif = op
                    req = PlaceOrderRequest(f"r{i}", "", user, symbol, side, "limit", str(price),
                                            units_to_decimal(qty, 3), None, i, client_order_id=f"c{i}", tif=tif)
                    expect = model.can_place(MM, user, side, "limit", price, qty, None)
                elif kind == "mbuy":
                    funds = op[2]
                    req = PlaceOrderRequest(f"r{i}", "", user, symbol, "buy", "market", None, None,
                                            units_to_decimal(funds * 1000, 6), i, client_order_id=f"c{i}", tif="IOC")
                    expect = model.can_place(MM, user, "buy", "market", None, None, funds)
                else:
                    qty = op[2]
                    req = PlaceOrderRequest(f"r{i}", "", user, symbol, "sell", "market", None,
                                            units_to_decimal(qty, 3), None, i, client_order_id=f"c{i}", tif="IOC")
                    expect = model.can_place(MM, user, "sell", "market", None, qty, None)
                await flow.send(shard_for_user(user, flow.shards), [req])
                await flow.intakes[shard_for_user(user, flow.shards)].step(block_ms=0)
                await flow.intakes[shard_for_user(user, flow.shards)].flush_events()
                async with pool.acquire() as conn:
                    oid = await conn.fetchval("SELECT id FROM orders WHERE user_id=$1 AND client_order_id=$2",
                                              user, f"c{i}")
                assert (oid is not None) == (expect is not None), (op, expect)
                if oid is not None and expect is not None:
                    model.place(oid, MM, user, req.side, req.type, int(req.price) if req.price else None, *expect)
                    oids.append(oid)
            elif kind == "cancel":
                if not oids:
                    continue
                oid = oids[op[1] % len(oids)]
                user = model.orders[oid].user
                await flow.send(shard_for_user(user, flow.shards),
                                [CancelRequest(f"r{i}", "", user, symbol, i, order_id=oid)])
            elif kind == "deposit":
                await deposit(users[op[1]], op[2], op[3])
            elif kind == "reverse":
                live = [d for d in deposits[2 * len(users):] if d[0] not in reversed_keys]  # not the funding
                if not live:
                    continue
                key, user, asset, amount = live[op[1] % len(live)]
                async with pool.acquire() as conn, conn.transaction():
                    assert await reverse_deposit(conn, deposit_key=key, reason="test reorg")
                reversed_keys.add(key)
                model.reverse(user, asset, amount)
            elif kind == "withdraw":
                user, amount = users[op[1]], op[2]
                await flow.send(shard_for_user(user, flow.shards), [WithdrawRequest(
                    f"{symbol}-w{i}", "", user, "BTC", units_to_decimal(amount, 8), BTC_REGTEST_ADDRESS, i)])
                await flow.drain()
                async with pool.acquire() as conn:
                    wid = await conn.fetchval("SELECT id FROM withdrawals WHERE request_id=$1", f"{symbol}-w{i}")
                assert (wid is not None) == model.hold(wid or -1, user, "BTC", amount, 10_000)
                if wid is not None:
                    wids.append(wid)
            elif kind == "wd_end":
                if not wids:
                    continue
                wid = wids.pop(op[1] % len(wids))
                async with pool.acquire() as conn, conn.transaction():
                    if op[2]:
                        assert await settle_withdrawal(conn, withdrawal_id=wid, txid="ab" * 32)
                        model.settle_withdrawal(wid)
                    else:
                        assert await release_withdrawal(conn, withdrawal_id=wid, reason="test")
                        model.release_withdrawal(wid)
            await flow.drain()
            # the model consumes the same engine events the settlement consumer applied
            resp: Any = await redis.xread({f"match:out{{{symbol}}}": seen_out}, count=100_000)
            for eid, fields in (resp[0][1] if resp else []):
                for e in decode_events(fields[b"b"]):
                    model.on_event(MM, e)
                seen_out = eid.decode()
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT user_id, asset, available, frozen FROM balances "
                                    "WHERE user_id = ANY($1::bigint[])", users)
            got = {(r["user_id"], r["asset"]): (r["available"], r["frozen"]) for r in rows
                   if (r["available"], r["frozen"]) != (0, 0)}
            assert got == model.balances()
            assert model.conserved()
            assert await run_audit(conn) == []
    finally:
        await redis.aclose()
        await pool.close()
