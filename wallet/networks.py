"""Chains and networks the wallet knows, and their per-network constants.

The network is always an explicit argument (no default, no global). Bitcoin testnet and
regtest share version bytes for keys and base58 addresses but differ in the bech32
human-readable part (`tb` vs `bcrt`). Ethereum addresses are the same on every network.
"""

from __future__ import annotations

from wallet.errors import WalletError

CHAINS = ("btc", "eth")
NETWORKS = ("mainnet", "testnet", "regtest")

BECH32_HRP = {"mainnet": "bc", "testnet": "tb", "regtest": "bcrt"}
# Base58 address version bytes: (P2PKH, P2SH).
BASE58_VERSIONS = {"mainnet": (0x00, 0x05), "testnet": (0x6F, 0xC4), "regtest": (0x6F, 0xC4)}
# BIP44 coin types (SLIP-44): Bitcoin mainnet 0, every test network 1, Ethereum 60.
COIN_TYPE = {("btc", "mainnet"): 0, ("btc", "testnet"): 1, ("btc", "regtest"): 1,
             ("eth", "mainnet"): 60, ("eth", "testnet"): 60, ("eth", "regtest"): 60}


def check_chain(chain: str) -> str:
    if chain not in CHAINS:
        raise WalletError(f"unknown chain {chain!r} (expected one of: {', '.join(CHAINS)})")
    return chain


def check_network(network: str) -> str:
    if network not in NETWORKS:
        raise WalletError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
    return network


def is_mainnet(network: str) -> bool:
    return check_network(network) == "mainnet"
