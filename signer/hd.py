"""HD key derivation for the signer: account paths, extended public keys, key origins, descriptors.

The signer derives its private keys itself (embit's `HDKey`, whose secp256k1 backend is the
bundled libsecp256k1 via ctypes) because the cold machine must not depend on service code.
Paths follow BIP84 (P2WPKH, m/84'/coin'/N'), BIP86 (P2TR, m/86'/coin'/N') and Ethereum's
m/44'/60'/N'. Extended public keys use SLIP-132 versions for P2WPKH (zpub mainnet, vpub
testnet/regtest) and plain xpub/tpub for P2TR and Ethereum; descriptors always carry the plain
xpub/tpub (BIP380) with a checksum. The network is always an explicit argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signer.errors import DerivationError
from signer.keystore import UnlockedSeed

HARDENED = 0x80000000
NETWORKS = ("mainnet", "testnet", "regtest")
BTC_TYPES = ("p2wpkh", "p2tr")
_EMBIT_NET = {"mainnet": "main", "testnet": "test", "regtest": "regtest"}
_PURPOSE = {"p2wpkh": 84, "p2tr": 86}
ETH_COIN = 60


def embit_network(network: str) -> dict[str, Any]:
    """embit's network parameters for our network name (mainnet, testnet, regtest)."""
    from embit.networks import NETWORKS as EMBIT_NETWORKS

    try:
        return EMBIT_NETWORKS[_EMBIT_NET[network]]  # type: ignore[no-any-return]
    except KeyError:
        raise DerivationError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}") from None


def btc_coin_type(network: str) -> int:
    """SLIP-44 coin type used in BIP44-style paths: 0 on mainnet, 1 on testnet and regtest."""
    embit_network(network)
    return 0 if network == "mainnet" else 1


def parse_path(path: str) -> list[int]:
    """`m/84'/1'/0'/0/5` (or with `h`) -> child indices; raises DerivationError."""
    parts = path.strip().split("/")
    if not parts or parts[0] != "m":
        raise DerivationError(f"derivation path must start with 'm/', got {path!r}")
    out: list[int] = []
    for part in parts[1:]:
        hardened = part.endswith(("'", "h", "H"))
        digits = part[:-1] if hardened else part
        if not digits.isdigit():
            raise DerivationError(f"bad derivation path component {part!r} in {path!r}")
        index = int(digits)
        if index >= HARDENED:
            raise DerivationError(f"derivation index {index} too large in {path!r}")
        out.append(index + HARDENED if hardened else index)
    return out


def format_path(indices: list[int], *, prefix: str = "m") -> str:
    """Child indices -> `m/84h/1h/0h/0/5` (prefix may be a fingerprint for key origins)."""
    parts = [prefix]
    for i in indices:
        parts.append(f"{i - HARDENED}h" if i >= HARDENED else str(i))
    return "/".join(parts)


def account_path(chain: str, network: str, account: int, script_type: str | None = None) -> list[int]:
    """The account path for `chain` (btc: by script type p2wpkh/p2tr; eth: m/44'/60'/N')."""
    if not 0 <= account < HARDENED:
        raise DerivationError(f"account must be between 0 and {HARDENED - 1}, got {account}")
    if chain == "btc":
        stype = script_type or "p2wpkh"
        if stype not in _PURPOSE:
            raise DerivationError(f"--type must be one of {', '.join(BTC_TYPES)}, got {stype!r}")
        return [_PURPOSE[stype] + HARDENED, btc_coin_type(network) + HARDENED, account + HARDENED]
    if chain == "eth":
        embit_network(network)
        if script_type not in (None, "eth"):
            raise DerivationError("--type applies to Bitcoin only")
        return [44 + HARDENED, ETH_COIN + HARDENED, account + HARDENED]
    raise DerivationError(f"chain must be btc or eth, got {chain!r}")


def root_key(seed: UnlockedSeed, network: str) -> Any:
    """The BIP32 master private key (embit HDKey) with the network's xprv/tprv version."""
    from embit.bip32 import HDKey

    net = embit_network(network)
    return HDKey.from_seed(seed.seed_bytes(), version=net["xprv"])


def derive(root: Any, indices: list[int]) -> Any:
    """The child HDKey at `indices` below `root` (private if root is private)."""
    from embit.bip32 import HDError

    try:
        return root.derive(indices)
    except HDError as exc:
        raise DerivationError(f"cannot derive {format_path(indices)}: {exc}") from None


@dataclass(frozen=True, slots=True)
class AccountExport:
    """What `coffer-signer xpub` prints for one account: public data only."""

    chain: str
    network: str
    script_type: str
    path: str  # m/84h/1h/0h
    extended_key: str  # zpub/vpub (P2WPKH) or xpub/tpub (P2TR, Ethereum)
    standard_xpub: str  # always xpub/tpub, as used in descriptors
    origin: str  # [fingerprint/84h/1h/0h]
    descriptor: str  # receive and change, BIP389 multipath, with checksum


def account_export(
    seed: UnlockedSeed, chain: str, network: str, account: int, script_type: str | None
) -> AccountExport:
    """Derive the account's extended public key and describe it (origin, descriptor)."""
    from embit.descriptor.checksum import add_checksum

    indices = account_path(chain, network, account, script_type)
    net = embit_network(network) if chain == "btc" else embit_network("mainnet")
    if chain == "eth":
        # Ethereum has no SLIP-132 prefix and no testnet version: xpub everywhere.
        from embit.bip32 import HDKey

        root = HDKey.from_seed(seed.seed_bytes(), version=net["xprv"])
    else:
        root = root_key(seed, network)
    account_key = derive(root, indices).to_public()
    standard = account_key.to_base58(version=net["xpub"])
    stype = "eth" if chain == "eth" else (script_type or "p2wpkh")
    extended = account_key.to_base58(version=net["zpub"]) if stype == "p2wpkh" else standard
    path = format_path(indices)
    origin = "[" + format_path(indices, prefix=seed.fingerprint) + "]"
    if stype == "p2wpkh":
        descriptor = add_checksum(f"wpkh({origin}{standard}/<0;1>/*)")
    elif stype == "p2tr":
        descriptor = add_checksum(f"tr({origin}{standard}/<0;1>/*)")
    else:
        # No descriptor language exists for Ethereum; this key expression is the same shape.
        descriptor = f"{origin}{standard}/0/*"
    return AccountExport(chain, network, stype, path, extended, standard, origin, descriptor)
