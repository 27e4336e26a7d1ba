"""Hot signer with its PostgreSQL policy state: decisions recorded, caps across restarts, no overshoot
under concurrency, idempotent retries, transaction checks, and exported xpubs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from signer.hot import TX_CHECK_RULE, HotSigner
from signer.keystore import UnlockedSeed
from signer.policy import Policy
from tests.signer.helpers import MNEMONIC, OTHER_MNEMONIC, build_psbt

SEED = UnlockedSeed(MNEMONIC)
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
ETH_DEST = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def make_policy(asset_suffix: str = "") -> Policy:
    return Policy.from_config({"rules": [
        {"name": "btc-single", "asset": "BTC" + asset_suffix, "max_single_chain_units": 50_000_000},
        {"name": "btc-day", "asset": "BTC" + asset_suffix, "window_seconds": 86400,
         "window_cap_chain_units": 100_000_000},
        {"name": "eth-allow", "asset": "ETH", "allowed_destinations": [ETH_DEST]},
        {"name": "usdt-single", "asset": "USDT", "max_single_chain_units": 1_000_000_000},
        {"name": "load-window", "asset": "LOAD", "window_seconds": 3600, "window_cap_chain_units": 100},
    ]})


def hot(policy: Policy | None = None) -> HotSigner:
    return HotSigner(SEED, policy or make_policy(), network="regtest", eth_chain_id=1337)


@pytest_asyncio.fixture
async def pool(db_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(db_url, min_size=1, max_size=25)
    try:
        yield p
    finally:
        await p.close()


def external_address(psbt: Any) -> str:
    from signer.hd import embit_network

    return str(psbt.outputs[0].script_pubkey.address(embit_network("regtest")))


async def sign_btc(pool: asyncpg.Pool, signer: HotSigner, request_id: str, amount_sat: int,
                   now: datetime, asset: str = "BTC", **kw: Any) -> Any:
    psbt = build_psbt(SEED, spend_sat=amount_sat, change_sat=100_000_000 - amount_sat - 10_000)
    async with pool.acquire() as conn, conn.transaction():
        return await signer.sign_btc(conn, request_id=request_id, requested_by="withdrawals:test", asset=asset,
                                     destination=kw.get("destination", external_address(psbt)),
                                     amount_sat=kw.get("claim", amount_sat), psbt=psbt.to_base64(), now=now)


@pytest.mark.asyncio
async def test_approved_btc_is_signed_and_recorded(pool: asyncpg.Pool) -> None:
    from embit.psbt import PSBT

    result = await sign_btc(pool, hot(), "w-1", 20_000_000, T0)
    assert result.approved and result.rule == "btc-single,btc-day" and result.txid
    signed = PSBT.from_base64(result.signed)
    assert len(signed.inputs[0].partial_sigs) == 1
    row = await pool.fetchrow("SELECT * FROM signer_decisions WHERE request_id = 'w-1'")
    assert row["approved"] and row["requested_by"] == "withdrawals:test" and row["asset"] == "BTC"
    assert int(row["amount_chain_units"]) == 20_000_000 and row["rule"] == "btc-single,btc-day"
    assert row["txid"] == result.txid and row["signer_fingerprint"] == SEED.fingerprint


@pytest.mark.asyncio
async def test_refusals_are_recorded_with_rule(pool: asyncpg.Pool) -> None:
    over = await sg(pool, "w-big", 60_000_000)
    assert not over.approved and over.rule == "btc-single" and over.signed is None
    # the request claims another amount than the PSBT pays
    lie = await sign_btc(pool, hot(), "w-lie", 10_000_000, T0, claim=9_000_000)
    assert not lie.approved and lie.rule == TX_CHECK_RULE and "not exactly 9000000 sat" in lie.reason
    wrong_dest = await sign_btc(pool, hot(), "w-dest", 10_000_000, T0,
                                destination="bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    assert not wrong_dest.approved and wrong_dest.rule == TX_CHECK_RULE
    rows = {r["request_id"]: r for r in await pool.fetch(
        "SELECT request_id, approved, rule, reason FROM signer_decisions WHERE request_id LIKE 'w-%'")}
    assert rows["w-big"]["rule"] == "btc-single" and not rows["w-big"]["approved"]
    assert rows["w-lie"]["rule"] == TX_CHECK_RULE and rows["w-dest"]["rule"] == TX_CHECK_RULE


async def sg(pool: asyncpg.Pool, request_id: str, amount: int) -> Any:
    return await sign_btc(pool, hot(), request_id, amount, T0 + timedelta(days=30))


@pytest.mark.asyncio
async def test_window_holds_across_restart_and_expires(db_url: str) -> None:
    policy = make_policy("-R")
    t = T0 + timedelta(days=100)
    first_pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        for i in range(2):
            r = await sign_btc(first_pool, hot(policy), f"r-{i}", 40_000_000, t + timedelta(minutes=i), asset="BTC-R")
            assert r.approved
    finally:
        await first_pool.close()
    # "restart": a new signer instance and a new pool; only PostgreSQL remembers
    second_pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        again = hot(policy)
        refused = await sign_btc(second_pool, again, "r-2", 30_000_000, t + timedelta(hours=1), asset="BTC-R")
        assert not refused.approved and refused.rule == "btc-day"
        assert "80000000 already signed" in refused.reason
        fits = await sign_btc(second_pool, again, "r-3", 20_000_000, t + timedelta(hours=2), asset="BTC-R")
        assert fits.approved
        # a day after the first two, they leave the window
        later = await sign_btc(second_pool, again, "r-4", 40_000_000, t + timedelta(days=1, minutes=2),
                               asset="BTC-R")
        assert later.approved
    finally:
        await second_pool.close()


@pytest.fixture
def own_postgres(fresh_postgres: Any) -> tuple[Any, str]:
    from tests.harness import new_database

    return fresh_postgres, new_database(fresh_postgres, "signer_restart")


@pytest.mark.asyncio
async def test_postgres_kill9_restart_keeps_window(own_postgres: tuple[Any, str]) -> None:
    fresh_postgres, url = own_postgres
    policy = make_policy()
    p = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        assert (await sign_btc(p, hot(policy), "k-1", 50_000_000, T0)).approved
        assert (await sign_btc(p, hot(policy), "k-2", 50_000_000, T0 + timedelta(minutes=1))).approved
    finally:
        await p.close()
    fresh_postgres.kill()
    fresh_postgres.start()
    p = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        r = await sign_btc(p, hot(policy), "k-3", 1_000, T0 + timedelta(minutes=2))
        assert not r.approved and r.rule == "btc-day"
    finally:
        await p.close()


@pytest.mark.asyncio
async def test_concurrent_requests_cannot_overshoot_window(pool: asyncpg.Pool) -> None:
    from signer.policy import SignRequest
    from signer.policy_store import decide

    policy = make_policy()
    start = asyncio.Event()

    async def one(i: int) -> bool:
        async with pool.acquire() as conn:
            await start.wait()
            async with conn.transaction():
                rec = await decide(conn, policy, SignRequest(f"c-{i}", "load", "LOAD", "btc", "x", 10),
                                   tx_digest=f"d{i}", signer_fingerprint="00000000", now=T0)
                await asyncio.sleep(0.001)  # hold the transaction open a little, as a real signature would
                return rec.decision.approved

    tasks = [asyncio.create_task(one(i)) for i in range(24)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)
    assert sum(results) == 10
    total = await pool.fetchval(
        "SELECT sum(amount_chain_units) FROM signer_decisions WHERE asset = 'LOAD' AND approved")
    assert int(total) == 100


@pytest.mark.asyncio
async def test_retry_is_idempotent_and_request_id_not_reusable(pool: asyncpg.Pool) -> None:
    t = T0 + timedelta(days=200)
    first = await sign_btc(pool, hot(), "i-1", 30_000_000, t)
    again = await sign_btc(pool, hot(), "i-1", 30_000_000, t)
    assert first.approved and again.approved and first.signed == again.signed
    count = await pool.fetchval("SELECT count(*) FROM signer_decisions WHERE request_id = 'i-1'")
    assert count == 1
    other = await sign_btc(pool, hot(), "i-1", 31_000_000, t)
    assert not other.approved and "already used for another transaction" in other.reason


def eth_tx(**over: Any) -> str:
    tx = {"type": 2, "chain_id": 1337, "nonce": 0, "to": ETH_DEST, "value": "5000", "gas": 21000,
          "max_fee_per_gas": 10**9, "max_priority_fee_per_gas": 10**9, "data": "0x",
          "derivation_path": "m/44'/60'/0'/0/0"}
    tx.update(over)
    return json.dumps(tx)


@pytest.mark.asyncio
async def test_eth_and_erc20(pool: asyncpg.Pool) -> None:
    from eth_account import Account

    signer = hot()
    async with pool.acquire() as conn, conn.transaction():
        ok = await signer.sign_eth(conn, request_id="e-1", requested_by="w", asset="ETH", destination=ETH_DEST,
                                   amount_chain_units=5000, tx_json=eth_tx(), now=T0)
    assert ok.approved and ok.signed
    assert Account.recover_transaction(ok.signed) == "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    other = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
    async with pool.acquire() as conn, conn.transaction():
        no = await signer.sign_eth(conn, request_id="e-2", requested_by="w", asset="ETH", destination=other,
                                   amount_chain_units=5000, tx_json=eth_tx(to=other), now=T0)
        mismatch = await signer.sign_eth(conn, request_id="e-3", requested_by="w", asset="ETH", destination=ETH_DEST,
                                         amount_chain_units=5001, tx_json=eth_tx(), now=T0)
        wrong_chain = await signer.sign_eth(conn, request_id="e-4", requested_by="w", asset="ETH",
                                            destination=ETH_DEST, amount_chain_units=5000,
                                            tx_json=eth_tx(chain_id=1), now=T0)
    assert not no.approved and no.rule == "eth-allow"
    assert not mismatch.approved and mismatch.rule == TX_CHECK_RULE
    assert not wrong_chain.approved and "chain id 1" in wrong_chain.reason
    data = "0xa9059cbb" + "00" * 12 + other[2:].lower() + f"{123_000_000:064x}"
    async with pool.acquire() as conn, conn.transaction():
        token = await signer.sign_eth(conn, request_id="e-5", requested_by="w", asset="USDT", destination=other,
                                      amount_chain_units=123_000_000, token_contract=USDT,
                                      tx_json=eth_tx(to=USDT, value="0", data=data, gas=65000), now=T0)
        too_big = await signer.sign_eth(conn, request_id="e-6", requested_by="w", asset="USDT", destination=other,
                                        amount_chain_units=123_000_001, token_contract=USDT,
                                        tx_json=eth_tx(to=USDT, value="0", data=data, gas=65000), now=T0)
    assert token.approved
    assert not too_big.approved and too_big.rule == TX_CHECK_RULE


@pytest.mark.asyncio
async def test_foreign_psbt_refused_and_xpubs_exported(pool: asyncpg.Pool) -> None:
    other = UnlockedSeed(OTHER_MNEMONIC)
    psbt = build_psbt(other)
    signer = hot()
    async with pool.acquire() as conn, conn.transaction():
        r = await signer.sign_btc(conn, request_id="f-1", requested_by="w", asset="BTC",
                                  destination=external_address(psbt), amount_sat=40_000_000,
                                  psbt=psbt.to_base64(), now=T0)
    assert not r.approved and r.rule == TX_CHECK_RULE and "nothing to sign" in r.reason
    exports = signer.account_xpubs()
    assert [e.extended_key[:4] for e in exports] == ["vpub", "tpub", "xpub"]
    assert "73c5da0a" in repr(signer) and "abandon" not in repr(signer)
