"""An ETH withdrawal above the hot policy goes the cold path: review, approve (transaction JSON with
a nonce from the nonce manager), `coffer-signer sign-eth` offline, import (checked against the
draft and its sender), broadcast, confirm, settle. A signature of a different transaction is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.withdrawals_proc.chains import EthApi
from ledger.withdrawals_proc.cold import approve, import_signed
from ledger.withdrawals_proc.errors import BuildError
from ledger.withdrawals_proc.processor import Processor, ProcessorConfig
from tests.signer.helpers import PASSPHRASE
from tests.withdrawals import env as E
from tests.withdrawals.cli import run_cli

DEST = "0x2222222222222222222222222222222222222222"


@pytest.mark.asyncio
async def test_eth_cold_path(db_url: str, redis_url: str, eth_chain: Any, tmp_path: Path) -> None:
    env = E.make_env(tmp_path, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    export = tmp_path / "export"
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn)
        proc = Processor(pool, env.signer, ProcessorConfig(export_dir=export), btc=None, eth=eth)
        hot = proc.keys.eth_hot_address
        funding = eth_chain.fund(hot, 3 * 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (11)")
        await E.credit(conn, user_id=11, asset="ETH", amount=3 * 10**9, txid=funding)
        w = await E.request_withdrawal(db_url, redis_url, user_id=11, asset="ETH", amount="1.5", address=DEST)
        await proc.step()
        assert await conn.fetchval("SELECT stage FROM wd_proc WHERE withdrawal_id = $1", w["id"]) == "review"
        assert await conn.fetchval("SELECT count(*) FROM wd_eth_free_nonces") == 1  # the refused draft's nonce

        tx_id, path = await approve(proc, w["id"])
        assert path is not None and path.exists()
        draft = json.loads(path.read_text())
        assert int(draft["nonce"]) == int(await conn.fetchval("SELECT nonce FROM wd_txs WHERE id = $1", tx_id))
        assert await conn.fetchval("SELECT count(*) FROM wd_eth_free_nonces") == 0  # reused, not skipped

        # a transaction signed for other fields is refused
        other = dict(draft, value=str(int(draft["value"]) + 1))
        other_in, other_out = tmp_path / "other.json", tmp_path / "other.hex"
        other_in.write_text(json.dumps(other))
        signed_other = run_cli(["sign-eth", "--keystore", str(env.keystore), "--in", str(other_in), "--out",
                                str(other_out), "--yes"], {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE},
                               module="signer.cold_cli")
        assert signed_other.returncode == 0, signed_other.stderr
        with pytest.raises(BuildError, match="differs from draft"):
            await import_signed(pool, other_out.read_text())

        out = tmp_path / "signed.hex"
        signed = run_cli(["sign-eth", "--keystore", str(env.keystore), "--in", str(path), "--out", str(out), "--yes"],
                         {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE}, module="signer.cold_cli")
        assert signed.returncode == 0, signed.stderr
        assert await import_signed(pool, out.read_text()) == tx_id
        await proc.step()  # broadcast (the chain mines it at once)
        eth_chain.mine(2)
        await proc.step()
        row = await conn.fetchrow("SELECT state, txid FROM withdrawals WHERE id = $1", w["id"])
        assert row["state"] == "settled"
        assert int(eth_chain.rpc("eth_getBalance", DEST, "latest"), 16) == 1499 * 10**15
        assert await conn.fetchval("SELECT path FROM wd_proc WHERE withdrawal_id = $1", w["id"]) == "cold"
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()


@pytest.mark.asyncio
async def test_rejected_cold_draft_nonce_is_filled(db_url: str, redis_url: str, eth_chain: Any,
                                                   tmp_path: Path) -> None:
    """A cold draft holds nonce N; a later hot withdrawal gets N+1 and cannot be mined before N. When
    the operator rejects the draft, nonce N is filled (a 1-wei self-transfer) and N+1 goes through:
    no nonce is skipped and nothing stays stuck."""
    from ledger.withdrawals_proc.cold import reject

    env = E.make_env(tmp_path, eth_chain_id=int(eth_chain.rpc("eth_chainId"), 16))
    conn = await asyncpg.connect(db_url)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=4)
    eth = EthApi(eth_chain.url)
    try:
        await E.seed_assets(conn)
        proc = Processor(pool, env.signer, ProcessorConfig(), btc=None, eth=eth)
        hot = proc.keys.eth_hot_address
        start = int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16)
        funding = eth_chain.fund(hot, 3 * 10**18)
        await conn.execute("INSERT INTO users (id) VALUES (13) ON CONFLICT DO NOTHING")
        await E.credit(conn, user_id=13, asset="ETH", amount=3 * 10**9, txid=funding)
        big = await E.request_withdrawal(db_url, redis_url, user_id=13, asset="ETH", amount="1", address=DEST)
        await proc.step()
        draft_id, _ = await approve(proc, big["id"])
        assert int(await conn.fetchval("SELECT nonce FROM wd_txs WHERE id = $1", draft_id)) == start
        small = await E.request_withdrawal(db_url, redis_url, user_id=13, asset="ETH", amount="0.01",
                                           address="0x5555555555555555555555555555555555555555")
        await proc.step()
        held = await conn.fetchrow("SELECT state, nonce FROM wd_txs WHERE withdrawal_id = $1", small["id"])
        assert held["state"] == "signed"  # the node will not take N+1 before N
        assert int(held["nonce"]) == start + 1

        await reject(pool, big["id"], "too large for today")
        await proc.step()  # filler at N, then N+1 broadcast
        eth_chain.mine(3)
        await proc.step()
        assert await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", small["id"]) == "settled"
        assert await conn.fetchval("SELECT state FROM withdrawals WHERE id = $1", big["id"]) == "released"
        filler = await conn.fetchrow("SELECT * FROM wd_txs WHERE reason = 'nonce gap filler'")
        assert filler["nonce"] == start and filler["state"] == "confirmed"
        assert int(eth_chain.rpc("eth_getTransactionCount", hot, "latest"), 16) == start + 2
        assert await E.audit_clean(conn) == []
    finally:
        await eth.aclose()
        await pool.close()
        await conn.close()
