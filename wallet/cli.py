"""`coffer wallet derive`: print one deposit address derived from an account xpub.

    coffer wallet derive --xpub KEY --chain btc|eth --network mainnet|testnet|regtest \\
        --index N [--change 0|1] [--type p2wpkh|p2tr]

Prints the address alone on stdout. A malformed or corrupted key, a key of another
network, a private key, or a hardened index (`5'`, `5h`, >= 2^31) ends with one line on
stderr (a `WalletError`, printed by coffer/cli.py) and exit status 1. With `--path` it
prints the derivation path after the address, separated by a tab.

    coffer wallet config --network regtest --btc-xpub VPUB [--btc-type p2wpkh|p2tr]
        [--eth-xpub XPUB] [--usdt-contract 0x...] [--gap-limit 20] [--out wallet.json]

writes the deposit-address config (format in wallet/config.py; the file the deposit API
reads from COFFER_WALLET_CONFIG) from the account xpubs `coffer-signer xpub` printed, after
validating every key against the network. Without --out it prints the JSON on stdout.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("wallet", help="HD wallet tools (xpub-only derivation)")
    cmds = parser.add_subparsers(dest="wallet_command", metavar="COMMAND")
    cmds.required = True
    derive = cmds.add_parser("derive", help="derive one address from an account xpub")
    derive.add_argument("--xpub", required=True, help="account extended public key (xpub/tpub/zpub/vpub)")
    derive.add_argument("--chain", required=True, help="btc or eth")
    derive.add_argument("--network", required=True, help="mainnet, testnet or regtest")
    derive.add_argument("--index", required=True, help="address index 0..2^31-1 (non-hardened)")
    derive.add_argument("--change", default="0", help="0 = receive (default), 1 = change")
    derive.add_argument("--type", dest="addr_type", default=None, help="btc only: p2wpkh (default) or p2tr")
    derive.add_argument("--path", action="store_true", help="also print the derivation path")
    derive.set_defaults(func=_derive)
    config = cmds.add_parser("config", help="write the deposit-address config from account xpubs")
    config.add_argument("--network", required=True, help="mainnet, testnet or regtest")
    config.add_argument("--btc-xpub", default=None, help="BTC account xpub/zpub/tpub/vpub")
    config.add_argument("--btc-type", default=None, help="p2wpkh (default) or p2tr")
    config.add_argument("--btc-account-path", default=None, help="e.g. m/84'/1'/0' (inferred for depth-3 keys)")
    config.add_argument("--eth-xpub", default=None, help="Ethereum account xpub (m/44'/60'/a')")
    config.add_argument("--eth-account-path", default=None, help="e.g. m/44'/60'/0' (inferred for depth-3 keys)")
    config.add_argument("--usdt-contract", default=None, help="USDT ERC-20 contract; USDT shares the ETH account")
    config.add_argument("--gap-limit", type=int, default=20, help="gap limit (default 20)")
    config.add_argument("--out", default=None, help="write the JSON to this file instead of stdout")
    config.set_defaults(func=_config)


def _derive(args: argparse.Namespace) -> int:
    from wallet.derive import check_index, open_account
    from wallet.errors import DerivationError

    if args.change not in ("0", "1"):
        raise DerivationError(f"--change must be 0 or 1, got {args.change!r}")
    change = int(args.change)
    deriver = open_account(args.xpub, args.chain, args.network, args.addr_type)
    index = check_index(args.index)
    derived = deriver.derive(index, change)
    if args.path:
        print(f"{derived.address}\t{derived.derivation_path}")
    else:
        print(derived.address)
    return 0


def _config(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from wallet.config import parse_config
    from wallet.errors import ConfigError

    assets: dict[str, dict[str, str]] = {}
    if args.btc_xpub:
        btc = {"chain": "btc", "network": args.network, "xpub": args.btc_xpub}
        if args.btc_type:
            btc["type"] = args.btc_type
        if args.btc_account_path:
            btc["account_path"] = args.btc_account_path
        assets["BTC"] = btc
    if args.eth_xpub:
        eth = {"chain": "eth", "network": args.network, "xpub": args.eth_xpub}
        if args.eth_account_path:
            eth["account_path"] = args.eth_account_path
        assets["ETH"] = eth
        if args.usdt_contract:
            assets["USDT"] = {**eth, "token": args.usdt_contract}
    elif args.usdt_contract:
        raise ConfigError("--usdt-contract needs --eth-xpub (USDT deposits use the Ethereum account)")
    if not assets:
        raise ConfigError("give at least one of --btc-xpub and --eth-xpub")
    document = {"gap_limit": args.gap_limit, "assets": assets}
    config = parse_config(document)  # refuses bad keys, wrong networks, private keys
    for code, asset in config.assets.items():
        if asset.token:
            document["assets"][code]["token"] = asset.token
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    return 0
