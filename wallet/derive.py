"""Deposit-address derivation from account-level extended public keys (no private keys).

`AccountDeriver` takes an account xpub (`m/84'/c'/a'`, `m/86'/c'/a'` or `m/44'/60'/a'`), a
chain, a network and an address type, checks that they fit together, and derives the
address of `change/index` (BIP44 chain 0 = receive, 1 = change). It caches the two change
nodes so each address costs one HMAC-SHA512, one public-key tweak-add (coincurve) and the
encoding. `open_account(...)` is the checked entry point used by the CLI and the registry.
Address types: `p2wpkh` (BIP84, bech32), `p2tr` (BIP86 key path, bech32m), `eth` (EIP-55).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from coincurve import PublicKey

from wallet.addresses import eth_address_from_pubkey, p2tr_address, p2wpkh_address
from wallet.bip32 import HARDENED, SECP256K1_N, ExtendedKey, format_index, parse_extended_key
from wallet.errors import DerivationError, InvalidKeyError, WalletError, WrongNetworkError
from wallet.networks import COIN_TYPE, NETWORKS, check_chain

BTC_TYPES = ("p2wpkh", "p2tr")
PURPOSE = {"p2wpkh": 84, "p2tr": 86, "eth": 44}
MAX_INDEX = HARDENED - 1


@dataclass(frozen=True, slots=True)
class DerivedAddress:
    address: str
    change: int
    index: int
    derivation_path: str


def standard_account_path(chain: str, network: str, addr_type: str, account: int = 0) -> str:
    """BIP44/84/86 account path: m/84'/coin'/account' (p2wpkh), m/86'/... (p2tr), m/44'/60'/... (eth)."""
    check_chain(chain)
    if network not in NETWORKS:
        raise WrongNetworkError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
    if addr_type not in PURPOSE or (chain == "eth") != (addr_type == "eth"):
        raise WalletError(f"address type {addr_type!r} does not fit chain {chain}")
    if not 0 <= account < HARDENED:
        raise DerivationError(f"account {account} out of range 0..2^31-1")
    return f"m/{PURPOSE[addr_type]}'/{COIN_TYPE[(chain, network)]}'/{account}'"


def check_index(index: int | str) -> int:
    """A non-hardened child index 0..2^31-1; hardened requests are refused (public key)."""
    if isinstance(index, str):
        text = index.strip()
        if text[-1:] in ("'", "h", "H"):
            raise DerivationError(f"index {text} is hardened: hardened children cannot be derived from a public key")
        try:
            index = int(text)
        except ValueError:
            raise DerivationError(f"index {text!r} is not a number") from None
    if index < 0:
        raise DerivationError(f"index {index} is negative")
    if index > MAX_INDEX:
        raise DerivationError(
            f"index {index} is >= 2^31, i.e. hardened: hardened children cannot be derived from a public key"
        )
    return index


def _eth_network_ok(key: ExtendedKey, network: str) -> bool:
    # Ethereum uses coin type 60 on every network and wallets export `xpub` for test
    # networks too, so on testnet/regtest both xpub and tpub are accepted; mainnet needs xpub.
    return key.version.mainnet or network != "mainnet"


class AccountDeriver:
    """Addresses of one account xpub on one chain/network/type; caches the change nodes."""

    __slots__ = ("_nodes", "account_key", "account_path", "addr_type", "chain", "network")

    def __init__(
        self, account_key: ExtendedKey, chain: str, network: str, addr_type: str, account_path: str | None = None
    ) -> None:
        self.account_key = account_key.neuter()
        self.chain = chain
        self.network = network
        self.addr_type = addr_type
        self.account_path = account_path if account_path is not None else self._infer_account_path()
        self._nodes: dict[int, tuple[PublicKey, bytes]] = {}

    def _infer_account_path(self) -> str:
        key = self.account_key
        if key.depth == 3 and key.child_number >= HARDENED:
            coin = COIN_TYPE[(self.chain, self.network)]
            return f"m/{PURPOSE[self.addr_type]}'/{coin}'/{format_index(key.child_number)}"
        # Unknown origin: name the account by its fingerprint.
        return f"[{key.fingerprint.hex()}]"

    def _node(self, change: int) -> tuple[PublicKey, bytes]:
        node = self._nodes.get(change)
        if node is None:
            child = self.account_key.child(change)
            node = (PublicKey(child.public_key), child.chain_code)
            self._nodes[change] = node
        return node

    def public_key(self, index: int, change: int = 0) -> bytes:
        """33-byte compressed public key of `change/index` (CKDpub with the cached node)."""
        if change not in (0, 1):
            raise DerivationError(f"change must be 0 (receive) or 1 (change), got {change}")
        index = check_index(index)
        parent, chain_code = self._node(change)
        digest = hmac.digest(chain_code, parent.format(compressed=True) + index.to_bytes(4, "big"), "sha512")
        il = digest[:32]
        if int.from_bytes(il, "big") >= SECP256K1_N:
            raise DerivationError(f"index {index} gives an invalid key (I_L >= n); skip it")
        try:
            return bytes(parent.add(il).format(compressed=True))
        except ValueError:
            raise DerivationError(f"index {index} gives the point at infinity; skip it") from None

    def encode(self, pubkey: bytes) -> str:
        if self.addr_type == "p2wpkh":
            return p2wpkh_address(pubkey, self.network)
        if self.addr_type == "p2tr":
            return p2tr_address(pubkey, self.network)
        return eth_address_from_pubkey(pubkey)

    def address(self, index: int, change: int = 0) -> str:
        return self.encode(self.public_key(index, change))

    def derivation_path(self, index: int, change: int = 0) -> str:
        return f"{self.account_path}/{change}/{index}"

    def derive(self, index: int, change: int = 0) -> DerivedAddress:
        return DerivedAddress(self.address(index, change), change, index, self.derivation_path(index, change))

    def addresses(self, start: int, count: int, change: int = 0) -> list[str]:
        """`count` consecutive addresses from `start` (the benchmark's hot loop)."""
        if count < 0:
            raise DerivationError("count must be >= 0")
        check_index(start)
        if count:
            check_index(start + count - 1)
        parent, chain_code = self._node(change)
        prefix = parent.format(compressed=True)
        encode = self.encode
        out: list[str] = []
        for index in range(start, start + count):
            il = hmac.digest(chain_code, prefix + index.to_bytes(4, "big"), "sha512")[:32]
            out.append(encode(parent.add(il).format(compressed=True)))
        return out

    def __repr__(self) -> str:
        return (
            f"AccountDeriver({self.chain}/{self.network}/{self.addr_type}, "
            f"account={self.account_path}, fingerprint={self.account_key.fingerprint.hex()})"
        )


def open_account(
    xpub: str, chain: str, network: str, addr_type: str | None = None, account_path: str | None = None
) -> AccountDeriver:
    """Parse and check an account xpub for chain/network/type; the one door for callers.

    Raises `InvalidKeyError` (malformed, corrupted, or a private key), `WrongNetworkError`
    (version of another network), `WalletError` (type not valid for the chain or key).
    """
    try:
        check_chain(chain)
    except WalletError as exc:
        raise WalletError(str(exc)) from None
    if network not in NETWORKS:
        raise WrongNetworkError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
    try:
        key = parse_extended_key(xpub, public_only=True)
    except InvalidKeyError as exc:
        raise InvalidKeyError(f"invalid extended public key: {exc}") from None
    if chain == "eth":
        if addr_type not in (None, "eth"):
            raise WalletError(f"--type {addr_type} is for Bitcoin; Ethereum has one address type")
        if not _eth_network_ok(key, network):
            raise WrongNetworkError(f"{key.version.prefix} key is for {' / '.join(key.networks())}, not {network}")
        if key.version.script_type is not None:
            raise InvalidKeyError(f"{key.version.prefix} is a Bitcoin script-type key; use an xpub for Ethereum")
        return AccountDeriver(key, chain, network, "eth", account_path)
    key.check_network(network)
    script_type = key.version.script_type
    if addr_type is None:
        addr_type = "p2wpkh"
    if addr_type not in BTC_TYPES:
        raise WalletError(f"unknown Bitcoin address type {addr_type!r} (expected p2wpkh or p2tr)")
    if script_type == "p2sh-p2wpkh":
        raise WalletError(f"{key.version.prefix} keys are for nested P2SH-P2WPKH (BIP49), which is not supported")
    if script_type == "p2wpkh" and addr_type != "p2wpkh":
        raise WalletError(f"{key.version.prefix} is a P2WPKH (BIP84) key; use --type p2wpkh or an xpub/tpub")
    return AccountDeriver(key, chain, network, addr_type, account_path)
