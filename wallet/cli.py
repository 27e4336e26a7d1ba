"""`coffer wallet derive`: print one deposit address derived from an account xpub.

    coffer wallet derive --xpub KEY --chain btc|eth --network mainnet|testnet|regtest \\
        --index N [--change 0|1] [--type p2wpkh|p2tr]

Prints the address alone on stdout. A malformed or corrupted key, a key of another
network, a private key, or a hardened index (`5'`, `5h`, >= 2^31) ends with one line on
stderr (a `WalletError`, printed by coffer/cli.py) and exit status 1. With `--path` it
prints the derivation path after the address, separated by a tab.
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
