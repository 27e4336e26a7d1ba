"""Shared set-up of the withdrawal tests: a hot keystore and signer, demo assets, funded users.

Deposit addresses are allocated by the real wallet registry from the hot signer's account
xpubs, funded on the local test chains, and credited through the real `ledger.deposits`
(what the watcher would do after the confirmations). Withdrawals are requested through the
real intake stream and consumer (`ledger.intake`), which holds the funds.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from signer.hot import HotSigner
from signer.policy import Policy
from tests.signer.helpers import PASSPHRASE, make_keystore

NETWORK = "regtest"
# BTC: hot-sign up to 0.01 BTC a withdrawal; ETH up to 0.5 ETH; USDT up to 1000 USDT.
POLICY = {"rules": [
    {"name": "btc-small", "asset": "BTC", "max_single_chain_units": "1000000"},
    {"name": "eth-small", "asset": "ETH", "max_single_chain_units": str(5 * 10**17)},
    {"name": "usdt-small", "asset": "USDT", "max_single_chain_units": str(1000 * 10**6)},
    # internal moves (sweeps to the hot address, gas top-ups of deposit addresses)
    {"name": "sweep-eth", "asset": "SWEEP:ETH", "max_single_chain_units": str(100 * 10**18)},
    {"name": "sweep-usdt", "asset": "SWEEP:USDT", "max_single_chain_units": str(10**6 * 10**6)},
    {"name": "gas-eth", "asset": "GAS:ETH", "max_single_chain_units": str(10**17)},
]}


@dataclass
class Env:
    keystore: Path
    policy_file: Path
    signer: HotSigner
    wallet_config: Any

    def signer_env(self) -> dict[str, str]:
        return {"COFFER_SIGNER_HOT_KEYSTORE": str(self.keystore), "COFFER_SIGNER_HOT_PASSPHRASE": PASSPHRASE,
                "COFFER_SIGNER_POLICY_FILE": str(self.policy_file), "COFFER_SIGNER_NETWORK": NETWORK}


def make_env(tmp: Path, usdt_contract: str | None = None, eth_chain_id: int | None = None) -> Env:
    from wallet.config import config_from_exports, parse_config

    keystore = tmp / "hot.keystore"
    seed = make_keystore(keystore)
    policy_file = tmp / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    signer = HotSigner(seed, Policy.from_config(POLICY), network=NETWORK, eth_chain_id=eth_chain_id)
    wallet_config = parse_config(config_from_exports(signer.account_xpubs(), usdt_contract=usdt_contract))
    return Env(keystore, policy_file, signer, wallet_config)


async def seed_assets(conn: asyncpg.Connection, usdt_contract: str | None = None) -> None:
    from ledger.demo import seed_demo

    async with conn.transaction():
        await seed_demo(conn, network=NETWORK, usdt_contract=usdt_contract)


async def deposit_address(conn: asyncpg.Connection, env: Env, user_id: int, asset: str) -> str:
    from wallet.registry import allocate

    async with conn.transaction():
        await conn.execute("INSERT INTO users (id) VALUES ($1) ON CONFLICT DO NOTHING", user_id)
        row, _ = await allocate(conn, env.wallet_config.asset(asset), user_id)
    return row.address


async def credit(conn: asyncpg.Connection, *, user_id: int, asset: str, amount: int, txid: str, vout: int = 0) -> None:
    from ledger.deposits import credit_deposit

    async with conn.transaction():
        await credit_deposit(conn, deposit_key=f"{asset}:{txid}:{vout}", user_id=user_id, asset=asset, amount=amount,
                             txid=txid, output_index=vout)


async def request_withdrawal(db_url: str, redis_url: str, *, user_id: int, asset: str, amount: str,
                             address: str) -> Any:
    """XADD a withdrawal request to the user's intake stream and run the intake consumer once."""
    from redis.asyncio import Redis

    from ledger import intake_protocol as ip
    from ledger.intake import IntakeConsumer

    redis = Redis.from_url(redis_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    try:
        shard = ip.shard_for_user(user_id, 1)
        req = ip.WithdrawRequest(rid=secrets.token_hex(8), reply_to="", user=user_id, asset=asset, amount=amount,
                                 address=address, ts_ms=int(time.time() * 1000))
        await redis.xadd(ip.intake_stream(shard), {ip.BATCH_FIELD: ip.encode_requests([req])})
        consumer = IntakeConsumer(pool, redis, shard=shard)
        await consumer.start()
        while await consumer.step(block_ms=0):
            pass
        return await pool.fetchrow("SELECT * FROM withdrawals WHERE request_id = $1", req.rid)
    finally:
        await pool.close()
        await redis.aclose()


async def audit_clean(conn: asyncpg.Connection) -> list[str]:
    from ledger.audit import run_audit

    return [str(d) for d in await run_audit(conn)]
