"""Deposit-address configuration: which assets get addresses, from which account xpub.

Read from the JSON file named by the environment variable COFFER_WALLET_CONFIG:

    {
      "gap_limit": 20,
      "assets": {
        "BTC":  {"chain": "btc", "network": "regtest", "xpub": "vpub...", "type": "p2wpkh"},
        "BTCT": {"chain": "btc", "network": "regtest", "xpub": "tpub...", "type": "p2tr",
                 "account_path": "m/86'/1'/0'"},
        "ETH":  {"chain": "eth", "network": "regtest", "xpub": "xpub..."},
        "USDT": {"chain": "eth", "network": "regtest", "xpub": "xpub...", "token": "0xdac1..."}
      }
    }

- `xpub`: the account-level extended public key exported by the hot signer (never a
  private key: a config holding one is refused). Its version must match the network
  (xpub/zpub on mainnet, tpub/vpub on testnet and regtest; Ethereum also accepts xpub on
  test networks).
- `type`: btc only, `p2wpkh` (default) or `p2tr`; Ethereum has one address type.
- `token`: ERC-20 contract (0x + 40 hex), optional, stored lower-case.
- `account_path`: optional; inferred for depth-3 keys as m/84'|86'|44'/coin'/account'.
- `gap_limit`: default 20. Allocation is gap-free (see wallet.registry); the limit is the
  largest hole between allocated indices the registry will tolerate and the look-ahead a
  wallet recovery must use.

Assets that share a chain, network, type and xpub (ETH and its ERC-20 tokens) share one
account, so a user gets one Ethereum address for all of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wallet.addresses import validate_eth_address
from wallet.derive import AccountDeriver, open_account
from wallet.errors import ConfigError, UnknownAssetError, WalletError

ENV_VAR = "COFFER_WALLET_CONFIG"
DEFAULT_GAP_LIMIT = 20


@dataclass(frozen=True, slots=True)
class AssetConfig:
    code: str
    chain: str
    network: str
    xpub: str = field(repr=False)
    addr_type: str
    token: str | None
    deriver: AccountDeriver = field(repr=False, compare=False)

    @property
    def account(self) -> str:
        """Stable id of the account: chain, network, type and a hash of the public node."""
        key = self.deriver.account_key
        digest = hashlib.sha256(key.public_key + key.chain_code).hexdigest()[:20]
        return f"{self.chain}:{self.network}:{self.addr_type}:{digest}"


@dataclass(frozen=True, slots=True)
class WalletConfig:
    assets: Mapping[str, AssetConfig]
    gap_limit: int = DEFAULT_GAP_LIMIT

    def asset(self, code: str) -> AssetConfig:
        try:
            return self.assets[code]
        except KeyError:
            known = ", ".join(sorted(self.assets)) or "none"
            raise UnknownAssetError(
                f"asset {code!r} is not configured for deposit addresses (configured: {known})"
            ) from None

    def assets_of_account(self, account: str) -> list[str]:
        return sorted(code for code, cfg in self.assets.items() if cfg.account == account)


def _asset_from_json(code: str, raw: Any) -> AssetConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"asset {code}: expected an object")
    unknown = set(raw) - {"chain", "network", "xpub", "type", "token", "account_path"}
    if unknown:
        raise ConfigError(f"asset {code}: unknown field(s) {', '.join(sorted(unknown))}")
    for name in ("chain", "network", "xpub"):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise ConfigError(f"asset {code}: '{name}' is required (a string)")
    token = raw.get("token")
    if token is not None:
        if raw["chain"] != "eth":
            raise ConfigError(f"asset {code}: 'token' is only for Ethereum (ERC-20) assets")
        try:
            token = validate_eth_address(str(token)).lower()
        except WalletError as exc:
            raise ConfigError(f"asset {code}: token contract: {exc}") from None
    try:
        deriver = open_account(raw["xpub"], raw["chain"], raw["network"], raw.get("type"), raw.get("account_path"))
    except WalletError as exc:
        raise ConfigError(f"asset {code}: {exc}") from None
    return AssetConfig(code, raw["chain"], raw["network"], raw["xpub"], deriver.addr_type, token, deriver)


def parse_config(data: Any) -> WalletConfig:
    """Validate a decoded JSON document; raises ConfigError with the asset and field at fault."""
    if not isinstance(data, dict):
        raise ConfigError("wallet config must be a JSON object")
    unknown = set(data) - {"assets", "gap_limit"}
    if unknown:
        raise ConfigError(f"wallet config: unknown field(s) {', '.join(sorted(unknown))}")
    gap_limit = data.get("gap_limit", DEFAULT_GAP_LIMIT)
    if not isinstance(gap_limit, int) or isinstance(gap_limit, bool) or not 1 <= gap_limit <= 10_000:
        raise ConfigError("wallet config: gap_limit must be an integer 1..10000")
    raw_assets = data.get("assets")
    if not isinstance(raw_assets, dict) or not raw_assets:
        raise ConfigError("wallet config: 'assets' must be a non-empty object")
    assets = {str(code): _asset_from_json(str(code), raw) for code, raw in raw_assets.items()}
    return WalletConfig(assets=assets, gap_limit=gap_limit)


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> WalletConfig:
    """Load the file at `path`, or at $COFFER_WALLET_CONFIG."""
    if path is None:
        env = os.environ if environ is None else environ
        path = env.get(ENV_VAR, "")
        if not path:
            raise ConfigError(f"{ENV_VAR} is not set (path of the deposit-address JSON config)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read wallet config {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"wallet config {path} is not valid JSON: line {exc.lineno}: {exc.msg}") from None
    return parse_config(data)


def config_from_exports(
    exports: Iterable[Any], *, usdt_contract: str | None = None, gap_limit: int = DEFAULT_GAP_LIMIT
) -> dict[str, Any]:
    """A config document (JSON-ready dict) from the hot signer's account exports.

    `exports` are objects with `chain`, `network`, `script_type`, `path` and `extended_key`
    (signer.hd.AccountExport, as `HotSigner.account_xpubs()` returns them). BTC deposits use
    the P2WPKH account; ETH, and USDT when `usdt_contract` is given, share the Ethereum
    account. The result is validated with `parse_config` before it is returned.
    """
    assets: dict[str, Any] = {}
    for export in exports:
        entry = {"chain": export.chain, "network": export.network, "xpub": export.extended_key,
                 "account_path": str(export.path).replace("h", "'")}
        if export.chain == "btc" and export.script_type == "p2wpkh":
            assets["BTC"] = {**entry, "type": "p2wpkh"}
        elif export.chain == "eth":
            assets["ETH"] = entry
            if usdt_contract is not None:
                assets["USDT"] = {**entry, "token": usdt_contract.lower()}
    document = {"gap_limit": gap_limit, "assets": assets}
    parse_config(document)
    return document


def ledger_mismatches(config: WalletConfig, ledger_assets: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Compare the config with the ledger's `assets` rows (code, chain, network, token_contract).

    Returns (errors, warnings): a configured asset whose chain, network or token differs from
    the ledger's is an error (its deposits would be watched on the wrong chain); one the
    ledger does not know is a warning (its deposits cannot be credited until it is seeded).
    """
    rows = {str(r["code"]): r for r in ledger_assets}
    errors: list[str] = []
    warnings: list[str] = []
    for code, cfg in sorted(config.assets.items()):
        row = rows.get(code)
        if row is None:
            warnings.append(f"asset {code} is configured for deposit addresses but not in the ledger's assets")
            continue
        if (row["chain"], row["network"]) != (cfg.chain, cfg.network):
            errors.append(
                f"asset {code}: wallet config says {cfg.chain}/{cfg.network}, "
                f"ledger says {row['chain']}/{row['network']}"
            )
        ledger_token = row["token_contract"]
        if (ledger_token or None) != cfg.token:
            errors.append(
                f"asset {code}: token contract {cfg.token} in the wallet config, {ledger_token} in the ledger"
            )
    return errors, warnings
