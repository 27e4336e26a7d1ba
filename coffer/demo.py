"""Demo mode of `coffer up`: local test chains, a hot keystore, the wallet config, demo
assets and markets, a demo user funded through REAL deposits on the local chains.

Everything it creates lives in the data dir (`.coffer/`): the hot keystore and its
passphrase file (demo only: a production hot keystore's passphrase never sits beside it),
the signing policy, `wallet.json`, the service token and the demo user's credentials. The
local chains keep their state in memory, so each run starts new chains: the watcher state
of the previous demo chains is retired (cursors and open observations), the ledger keeps
every balance it credited.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coffer.errors import ServiceError
from coffer.supervisor import ServiceSpec

DEMO_NETWORK = "regtest"
HOT_KEYSTORE = "hot-keystore.json"
HOT_PASSPHRASE = "hot-passphrase"  # noqa: S105 - a file name, not a secret
POLICY_FILE = "signer-policy.json"
WALLET_CONFIG = "wallet.json"
SERVICE_TOKEN = "service-token"  # noqa: S105 - a file name, not a secret
# Chain units the demo user receives on chain at each run (real faucet transactions).
DEMO_DEPOSITS = {"BTC": 50_000_000, "ETH": 5 * 10**18, "USDT": 50_000 * 10**6}
# The demo hot policy: small withdrawals are signed automatically, larger go cold.
DEMO_POLICY = {
    "rules": [
        {"name": "btc-small", "asset": "BTC", "max_single_chain_units": "10000000"},
        {"name": "btc-daily", "asset": "BTC", "window_seconds": 86400, "window_cap_chain_units": "50000000"},
        {"name": "eth-small", "asset": "ETH", "max_single_chain_units": str(2 * 10**18)},
        {"name": "usdt-small", "asset": "USDT", "max_single_chain_units": str(20_000 * 10**6)},
        # Internal moves of the withdrawal processor: ETH gas top-ups and nonce-gap fillers.
        {"name": "gas-eth", "asset": "GAS:ETH", "max_single_chain_units": str(10**17)},
    ]
}


@dataclass(frozen=True, slots=True)
class DemoFiles:
    root: Path

    def path(self, name: str) -> Path:
        return self.root / name


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.replace(path)


def ensure_secret_file(path: Path) -> str:
    """A random secret kept in `path` (mode 0600), created on first use."""
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(32)
    _write_private(path, value + "\n")
    return value


def ensure_hot_keystore(files: DemoFiles) -> Path:
    """Create the demo hot keystore (random 24-word mnemonic) unless it exists."""
    from signer import keystore

    path = files.path(HOT_KEYSTORE)
    passphrase = ensure_secret_file(files.path(HOT_PASSPHRASE))
    if not path.exists():
        seed = keystore.UnlockedSeed(keystore.generate_mnemonic(24))
        keystore.save(path, keystore.seal(seed, passphrase))
    policy = files.path(POLICY_FILE)
    if not policy.exists():
        _write_private(policy, json.dumps(DEMO_POLICY, indent=2) + "\n")
    return path


def hot_exports(files: DemoFiles) -> list[Any]:
    """The hot account xpubs (BTC P2WPKH/P2TR, Ethereum) of the demo keystore."""
    from signer import keystore
    from signer.hd import account_export

    passphrase = files.path(HOT_PASSPHRASE).read_text().strip()
    seed = keystore.load(files.path(HOT_KEYSTORE), passphrase)
    return [
        account_export(seed, "btc", DEMO_NETWORK, 0, "p2wpkh"),
        account_export(seed, "btc", DEMO_NETWORK, 0, "p2tr"),
        account_export(seed, "eth", DEMO_NETWORK, 0, None),
    ]


def write_wallet_config(files: DemoFiles, exports: list[Any], usdt_contract: str) -> Path:
    from wallet.config import config_from_exports

    document = config_from_exports(exports, usdt_contract=usdt_contract)
    path = files.path(WALLET_CONFIG)
    _write_private(path, json.dumps(document, indent=2) + "\n")
    return path


def chain_specs(eth_port: int, btc_port: int) -> list[ServiceSpec]:
    """The two local chains; BTC mines a block every 2 s, Ethereum every second."""
    return [
        ServiceSpec("chain-eth", ("chain", "eth", "--port", str(eth_port), "--block-time", "1"),
                    url=f"http://127.0.0.1:{eth_port}", ready_line="ready"),
        ServiceSpec("chain-btc", ("chain", "btc", "--port", str(btc_port), "--block-time", "2"),
                    url=f"http://127.0.0.1:{btc_port}", ready_line="ready"),
    ]


def service_env(files: DemoFiles, eth_url: str, btc_url: str, token: str, eth_chain_id: int) -> dict[str, str]:
    """Environment every demo service gets (watchers, deposit API, withdrawal processor)."""
    return {
        "COFFER_WALLET_CONFIG": str(files.path(WALLET_CONFIG)),
        "COFFER_SERVICE_TOKEN": token,
        "COFFER_WATCHER_NETWORK": DEMO_NETWORK,
        "COFFER_WATCHER_ESPLORA_URL": btc_url,
        "COFFER_WATCHER_ETH_RPC_URL": eth_url,
        "COFFER_WATCHER_START_HEIGHT": "0",
        "COFFER_WATCHER_POLL_S": "1",
        "COFFER_SIGNER_HOT_KEYSTORE": str(files.path(HOT_KEYSTORE)),
        "COFFER_SIGNER_HOT_PASSPHRASE_FILE": str(files.path(HOT_PASSPHRASE)),
        "COFFER_SIGNER_POLICY_FILE": str(files.path(POLICY_FILE)),
        "COFFER_SIGNER_NETWORK": DEMO_NETWORK,
        "COFFER_SIGNER_ETH_CHAIN_ID": str(eth_chain_id),
        "COFFER_WITHDRAWALS_EXPORT_DIR": str(files.path("withdrawals-export")),
    }


def watcher_specs() -> list[ServiceSpec]:
    return [
        ServiceSpec("watcher-btc", ("watcher", "run", "--chain", "btc")),
        ServiceSpec("watcher-eth", ("watcher", "run", "--chain", "eth")),
    ]


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    import httpx

    response = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=30)
    body = response.json()
    if "error" in body:
        raise ServiceError(f"demo chain {method} failed: {body['error'].get('message', body['error'])}")
    return body["result"]


def deploy_usdt(eth_url: str) -> str:
    from watchers.testchains.erc20 import deploy_erc20

    return str(deploy_erc20(eth_url)).lower()


def eth_chain_id(eth_url: str) -> int:
    return int(_rpc(eth_url, "eth_chainId", []), 16)


async def retire_old_chain_state(conn: Any) -> None:
    """New in-memory chains: forget the old chains' cursors, block hashes and open deposits.

    Credited deposits stay credited (the ledger is the book of record); what was still
    confirming on a chain that no longer exists is marked dropped.
    """
    async with conn.transaction():
        await conn.execute("DELETE FROM watcher_cursors WHERE network = $1", DEMO_NETWORK)
        await conn.execute("DELETE FROM watcher_blocks WHERE network = $1", DEMO_NETWORK)
        await conn.execute(
            "UPDATE watcher_deposits SET status = 'dropped', updated_at = now() "
            "WHERE network = $1 AND status IN ('confirming', 'orphaned')",
            DEMO_NETWORK,
        )


async def allocate_demo_addresses(conn: Any, user_id: int, wallet_config: Path) -> dict[str, str]:
    """The demo user's deposit address per asset (allocated once, then the same)."""
    from wallet.config import load_config
    from wallet.registry import allocate

    config = load_config(wallet_config)
    addresses: dict[str, str] = {}
    for code in ("BTC", "ETH", "USDT"):
        async with conn.transaction():
            deposit, _created = await allocate(conn, config.assets[code], user_id)
        addresses[code] = deposit.address
    return addresses


def pay_demo_deposits(addresses: dict[str, str], usdt_contract: str, eth_url: str, btc_url: str) -> None:
    """Pay the demo user's deposit addresses from the chains' faucets (real transactions).

    The watchers find these payments and the ledger credits them after confirmations,
    exactly like any user's deposits.
    """
    import httpx

    response = httpx.post(f"{btc_url}/regtest/faucet",
                          json={"address": addresses["BTC"], "amount_sat": DEMO_DEPOSITS["BTC"]}, timeout=30)
    if response.status_code != 200:
        raise ServiceError(f"demo BTC faucet failed: {response.text.strip()[:200]}")
    _rpc(eth_url, "coffer_fund", [addresses["ETH"], hex(DEMO_DEPOSITS["ETH"])])
    _rpc(eth_url, "coffer_mintErc20", [usdt_contract, addresses["USDT"], hex(DEMO_DEPOSITS["USDT"])])


@dataclass(frozen=True, slots=True)
class DemoReady:
    env: dict[str, str]
    rows: list[tuple[str, str]]


def prepare(data_dir: Path, database_url: str, eth_url: str, btc_url: str, env_name: str) -> DemoReady:
    """Everything demo mode sets up once the chains answer; returns the services' env and
    the lines to print (URLs, demo credentials)."""
    import asyncio

    files = DemoFiles(data_dir)
    usdt = deploy_usdt(eth_url)
    ensure_hot_keystore(files)
    wallet_config = write_wallet_config(files, hot_exports(files), usdt)
    token = ensure_secret_file(files.path(SERVICE_TOKEN))
    chain_id = eth_chain_id(eth_url)

    async def database() -> tuple[Any, dict[str, str]]:
        import asyncpg

        from api.demo import ensure_demo_user
        from ledger.demo import seed_demo

        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                await seed_demo(conn, network=DEMO_NETWORK, usdt_contract=usdt)
            await retire_old_chain_state(conn)
        finally:
            await conn.close()
        creds = await ensure_demo_user(database_url, data_dir, env_name, fund=False)
        conn = await asyncpg.connect(database_url)
        try:
            addresses = await allocate_demo_addresses(conn, creds.user_id, wallet_config)
        finally:
            await conn.close()
        return creds, addresses

    creds, addresses = asyncio.run(database())
    pay_demo_deposits(addresses, usdt, eth_url, btc_url)
    rows = [
        ("USDT contract", usdt),
        ("demo user", f"id {creds.user_id}, API key {creds.key_id}, secret {creds.secret.get()}"),
        ("demo credentials", str(data_dir / "demo-user.json")),
        ("demo deposits", ", ".join(f"{code} -> {addr}" for code, addr in addresses.items())),
        ("service token", f"in {files.path(SERVICE_TOKEN)}"),
    ]
    return DemoReady(service_env(files, eth_url, btc_url, token, chain_id), rows)
