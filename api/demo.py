"""The demo user of `coffer up`: created once, funded once, its credentials kept for re-runs.

`ensure_demo_user(database_url, data_dir, env)` is idempotent: the first call creates a user
with an API key, credits demo balances through the ledger's deposit interface (deposit keys
`demo-faucet:<asset>:<user>`, so the audit explains them like any deposit) and writes the
credentials to `<data_dir>/demo-user.json` (mode 0600); later calls return the same
credentials while that key is still valid. Refused when `env` is `prod`: a demo key has no
place there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from api.errors import CredentialsError
from coffer.settings import Secret

DEMO_FILE = "demo-user.json"
# ledger units: 1 BTC (sat), 10 ETH (gwei), 100,000 USDT (1e-6)
DEMO_FUNDS = {"BTC": 100_000_000, "ETH": 10_000_000_000, "USDT": 100_000_000_000}


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    user_id: int
    key_id: str
    secret: Secret


async def ensure_demo_user(database_url: str, data_dir: Path, env: str, *, fund: bool = True) -> DemoCredentials:
    import asyncpg

    from api.cli_users import create_user_with_key
    from api.keystore import load_key
    from api.secretbox import load_master_key

    if env == "prod":
        raise CredentialsError("no demo user when COFFER_ENV=prod")
    master = load_master_key(env, data_dir)
    path = data_dir / DEMO_FILE
    creds: DemoCredentials | None = None
    raw = _read(path)
    if raw is not None:
        conn = await asyncpg.connect(database_url)
        try:
            key = await load_key(conn, master, str(raw.get("key_id", "")))
        finally:
            await conn.close()
        if key is not None and str(key.user_id) == str(raw.get("user_id")):
            creds = DemoCredentials(key.user_id, key.key_id, key.secret)
    if creds is None:
        user_id, key_id, secret = await create_user_with_key(database_url, master, "demo")
        creds = DemoCredentials(user_id, key_id, Secret(secret))
        _write(path, {"user_id": user_id, "key_id": key_id, "secret": secret})
    if fund:
        await _fund(database_url, creds.user_id)
    return creds


def _read(path: Path) -> dict[str, object] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, object]) -> None:
    """Write the credentials file with mode 0600 (replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    tmp.replace(path)


async def _fund(database_url: str, user_id: int) -> None:
    import asyncpg

    from ledger.deposits import credit_deposit

    conn = await asyncpg.connect(database_url)
    try:
        known = {r["code"] for r in await conn.fetch("SELECT code FROM assets")}
        async with conn.transaction():
            for asset, amount in DEMO_FUNDS.items():
                if asset in known:
                    await credit_deposit(conn, deposit_key=f"demo-faucet:{asset}:{user_id}", user_id=user_id,
                                         asset=asset, amount=amount, txid=f"demo-faucet-{user_id}", output_index=0)
    finally:
        await conn.close()
