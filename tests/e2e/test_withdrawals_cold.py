"""A BTC withdrawal above the hot policy goes the cold path through the real CLIs: the processor
puts it in review, `coffer withdrawals approve` exports the PSBT, `coffer-signer sign` signs it
offline, `coffer withdrawals import` stores it, the processor broadcasts it, it confirms and the
ledger settles it. A second one is rejected by the operator and its hold released."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from tests.signer.helpers import PASSPHRASE
from tests.withdrawals import env as E
from tests.withdrawals.cli import run_cli

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def _q(db_url: str, sql: str, *args: Any) -> Any:
    async def go() -> Any:
        conn = await asyncpg.connect(db_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


def test_btc_cold_path_export_sign_import(db_url: str, redis_url: str, btc_chain: Any, tmp_path: Path) -> None:
    env = E.make_env(tmp_path)
    export = tmp_path / "export"

    async def setup() -> tuple[Any, Any]:
        conn = await asyncpg.connect(db_url)
        try:
            await E.seed_assets(conn)
            address = await E.deposit_address(conn, env, 2, "BTC")
            funding = btc_chain.faucet(address, 20_000_000)
            btc_chain.mine(2)
            await E.credit(conn, user_id=2, asset="BTC", amount=20_000_000, txid=funding)
        finally:
            await conn.close()
        big = await E.request_withdrawal(db_url, redis_url, user_id=2, asset="BTC", amount="0.05", address=DEST)
        other = await E.request_withdrawal(db_url, redis_url, user_id=2, asset="BTC", amount="0.03", address=DEST)
        return big, other

    big, other = asyncio.run(setup())
    cenv = {"COFFER_DATABASE_URL": db_url, "COFFER_WITHDRAWALS_ESPLORA_URL": btc_chain.url,
            "COFFER_WITHDRAWALS_EXPORT_DIR": str(export), **env.signer_env()}

    done = run_cli(["withdrawals", "run", "--once"], cenv)
    assert done.returncode == 0, done.stderr
    stages = _q(db_url, "SELECT withdrawal_id, stage, reason FROM wd_proc ORDER BY withdrawal_id")
    assert [s["stage"] for s in stages] == ["review", "review"]
    assert "btc-small" in stages[0]["reason"] and "exceeds" in stages[0]["reason"]
    assert _q(db_url, "SELECT count(*) AS n FROM wd_btc_inputs")[0]["n"] == 0  # refused drafts gave coins back
    listed = run_cli(["withdrawals", "list"], cenv)
    assert listed.returncode == 0 and "review" in listed.stdout and str(big["id"]) in listed.stdout

    approved = run_cli(["withdrawals", "approve", str(big["id"])], cenv)
    assert approved.returncode == 0, approved.stderr
    files = sorted(export.glob("*.psbt"))
    assert len(files) == 1 and files[0].name.startswith(f"wd{big['id']}-")
    again = run_cli(["withdrawals", "export", "--dir", str(tmp_path / "again")], cenv)
    assert again.returncode == 0 and "1 unsigned transaction(s) exported" in again.stdout
    assert (tmp_path / "again" / files[0].name).read_text() == files[0].read_text()

    signed = tmp_path / "signed.psbt"
    sign = run_cli(["sign", "--keystore", str(env.keystore), "--in", str(files[0]), "--out", str(signed), "--yes",
                    "--network", "regtest"], {"COFFER_SIGNER_PASSPHRASE": PASSPHRASE}, module="signer.cold_cli")
    assert sign.returncode == 0, sign.stderr
    assert "0.04990000 BTC (4990000 sat) external" in sign.stdout  # the officer sees the amount

    tampered = tmp_path / "tampered.psbt"
    tampered.write_text(files[0].read_text())  # unsigned: cannot be finalized
    bad = run_cli(["withdrawals", "import", "--signed", str(tampered)], cenv)
    assert bad.returncode == 1 and "not fully signed" in bad.stderr

    imported = run_cli(["withdrawals", "import", "--signed", str(signed)], cenv)
    assert imported.returncode == 0, imported.stderr
    rejected = run_cli(["withdrawals", "reject", str(other["id"]), "--reason", "suspicious destination"], cenv)
    assert rejected.returncode == 0, rejected.stderr

    assert run_cli(["withdrawals", "run", "--once"], cenv).returncode == 0  # broadcast
    tx = _q(db_url, "SELECT txid, state FROM wd_txs WHERE withdrawal_id = $1 AND state <> 'abandoned'", big["id"])
    assert [t["state"] for t in tx] == ["broadcast"]
    assert tx[0]["txid"] in btc_chain.get("/mempool/txids").json()
    btc_chain.mine(2)
    assert run_cli(["withdrawals", "run", "--once"], cenv).returncode == 0  # confirm and settle
    states = _q(db_url, "SELECT id, state FROM withdrawals ORDER BY id")
    assert [s["state"] for s in states] == ["settled", "released"]
    onchain = btc_chain.get(f"/tx/{tx[0]['txid']}").json()
    assert [o["value"] for o in onchain["vout"] if o.get("scriptpubkey_address") == DEST] == [4_990_000]
    shown = run_cli(["withdrawals", "show", str(big["id"])], cenv)
    assert shown.returncode == 0 and tx[0]["txid"] in shown.stdout and "confirmed" in shown.stdout

    async def audit() -> list[str]:
        conn = await asyncpg.connect(db_url)
        try:
            return await E.audit_clean(conn)
        finally:
            await conn.close()

    assert asyncio.run(audit()) == []
    audited = run_cli(["ledger", "audit"], cenv)
    assert audited.returncode == 0 and "audit clean" in audited.stdout, audited.stdout + audited.stderr
    bal = _q(db_url, "SELECT available, frozen FROM balances WHERE user_id = 2 AND asset = 'BTC'")[0]
    assert (bal["available"], bal["frozen"]) == (20_000_000 - 5_000_000, 0)
