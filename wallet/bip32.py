"""BIP32 hierarchical deterministic keys: master from seed, private and public child
derivation, and (de)serialisation of extended keys including SLIP-132 versions.

Pure code, EC math on coincurve (libsecp256k1). An `ExtendedKey` is immutable; its repr
shows its kind, depth, path position and fingerprint, never key bytes or chain code.
`parse_extended_key(text, network=...)` checks everything BIP32 test vector 5 exercises
(version, key prefix, zero-depth rules, key range, point validity, checksum) and, when a
network is given, that the key's version belongs to it. Errors: `InvalidKeyError`,
`WrongNetworkError`, `DerivationError`.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from coincurve import PrivateKey, PublicKey

from wallet.base58 import b58check_decode, b58check_encode
from wallet.errors import DerivationError, InvalidKeyError, WrongNetworkError
from wallet.hashes import hash160
from wallet.networks import NETWORKS

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HARDENED = 0x80000000


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One row of the BIP32 / SLIP-132 version table."""

    prefix: str  # what the base58 form starts with: xpub, zprv, ...
    version: bytes
    mainnet: bool  # False: testnet and regtest (they share version bytes)
    private: bool
    script_type: str | None  # None (BIP32/44/86 plain), "p2wpkh" (BIP84), "p2sh-p2wpkh" (BIP49)


VERSIONS: tuple[KeyVersion, ...] = (
    KeyVersion("xpub", bytes.fromhex("0488b21e"), True, False, None),
    KeyVersion("xprv", bytes.fromhex("0488ade4"), True, True, None),
    KeyVersion("tpub", bytes.fromhex("043587cf"), False, False, None),
    KeyVersion("tprv", bytes.fromhex("04358394"), False, True, None),
    KeyVersion("ypub", bytes.fromhex("049d7cb2"), True, False, "p2sh-p2wpkh"),
    KeyVersion("yprv", bytes.fromhex("049d7878"), True, True, "p2sh-p2wpkh"),
    KeyVersion("upub", bytes.fromhex("044a5262"), False, False, "p2sh-p2wpkh"),
    KeyVersion("uprv", bytes.fromhex("044a4e28"), False, True, "p2sh-p2wpkh"),
    KeyVersion("zpub", bytes.fromhex("04b24746"), True, False, "p2wpkh"),
    KeyVersion("zprv", bytes.fromhex("04b2430c"), True, True, "p2wpkh"),
    KeyVersion("vpub", bytes.fromhex("045f1cf6"), False, False, "p2wpkh"),
    KeyVersion("vprv", bytes.fromhex("045f18bc"), False, True, "p2wpkh"),
)
_BY_BYTES = {v.version: v for v in VERSIONS}
_BY_PREFIX = {v.prefix: v for v in VERSIONS}


def version_for(network: str, private: bool, script_type: str | None = None) -> KeyVersion:
    """The version to serialise a key of `network` with (xpub/tpub, zpub/vpub, ...)."""
    if network not in NETWORKS:
        raise WrongNetworkError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
    mainnet = network == "mainnet"
    for v in VERSIONS:
        if v.mainnet == mainnet and v.private == private and v.script_type == script_type:
            return v
    raise InvalidKeyError(f"no extended key version for script type {script_type!r}")


def version_by_prefix(prefix: str) -> KeyVersion:
    try:
        return _BY_PREFIX[prefix]
    except KeyError:
        raise InvalidKeyError(f"unknown extended key prefix {prefix!r}") from None


def format_index(index: int) -> str:
    return f"{index - HARDENED}'" if index >= HARDENED else str(index)


def parse_path(path: str) -> list[int]:
    """`m/84'/0'/0'/0/5` (also `h`/`H` for hardened, `m` alone) -> child numbers."""
    text = path.strip()
    parts = text.split("/")
    if parts[0] == "m":
        parts = parts[1:]
    indices: list[int] = []
    for part in parts:
        hardened = part[-1:] in ("'", "h", "H")
        digits = part[:-1] if hardened else part
        if not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
            raise DerivationError(f"bad derivation path {path!r}: step {part!r} is not a number")
        value = int(digits)
        if value >= HARDENED:
            raise DerivationError(f"bad derivation path {path!r}: index {value} must be below 2^31")
        indices.append(value + HARDENED if hardened else value)
    return indices


def format_path(indices: Iterable[int]) -> str:
    return "/".join(["m", *(format_index(i) for i in indices)])


class ExtendedKey:
    """A BIP32 node: version, depth, parent fingerprint, child number, chain code and key.

    `key` is 33 bytes (compressed public key) or 32 bytes (private key). Instances are
    immutable; derive children with `child` / `derive`.
    """

    __slots__ = ("_chain_code", "_private", "_pubkey", "child_number", "depth", "parent_fingerprint", "version")

    version: KeyVersion
    depth: int
    parent_fingerprint: bytes
    child_number: int
    _chain_code: bytes
    _private: bytes | None
    _pubkey: bytes

    def __init__(
        self,
        version: KeyVersion,
        depth: int,
        parent_fingerprint: bytes,
        child_number: int,
        chain_code: bytes,
        key: bytes,
    ) -> None:
        if len(chain_code) != 32:
            raise InvalidKeyError("chain code must be 32 bytes")
        if not 0 <= depth <= 255:
            raise InvalidKeyError(f"depth {depth} out of range 0..255")
        if len(parent_fingerprint) != 4 or not 0 <= child_number < 2**32:
            raise InvalidKeyError("parent fingerprint must be 4 bytes and child number 32 bits")
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "parent_fingerprint", parent_fingerprint)
        object.__setattr__(self, "child_number", child_number)
        object.__setattr__(self, "_chain_code", chain_code)
        if version.private:
            if len(key) != 32:
                raise InvalidKeyError("a private key must be 32 bytes")
            if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
                raise InvalidKeyError("private key is not in the range 1..n-1")
            object.__setattr__(self, "_private", key)
            object.__setattr__(self, "_pubkey", PrivateKey(key).public_key.format(compressed=True))
        else:
            if len(key) != 33 or key[0] not in (2, 3):
                raise InvalidKeyError("a public key must be 33 bytes starting with 02 or 03")
            try:
                PublicKey(key)
            except ValueError:
                raise InvalidKeyError("public key is not a point on secp256k1") from None
            object.__setattr__(self, "_private", None)
            object.__setattr__(self, "_pubkey", key)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ExtendedKey is immutable")

    # -- constructors -----------------------------------------------------------------

    @classmethod
    def from_seed(cls, seed: bytes, network: str, script_type: str | None = None) -> ExtendedKey:
        """The master private key of `seed` (16..64 bytes), serialised for `network`."""
        if not 16 <= len(seed) <= 64:
            raise InvalidKeyError(f"a BIP32 seed is 16..64 bytes, got {len(seed)}")
        digest = hmac.digest(b"Bitcoin seed", seed, "sha512")
        return cls(version_for(network, True, script_type), 0, b"\x00" * 4, 0, digest[32:], digest[:32])

    @classmethod
    def parse(cls, text: str) -> ExtendedKey:
        """Decode and fully validate a base58 extended key of any known version."""
        if not isinstance(text, str) or not text.strip():
            raise InvalidKeyError("extended key is empty")
        raw = b58check_decode(text.strip(), InvalidKeyError)
        if len(raw) != 78:
            raise InvalidKeyError(f"extended key must be 78 bytes, got {len(raw)}")
        version = _BY_BYTES.get(raw[:4])
        if version is None:
            raise InvalidKeyError(f"unknown extended key version 0x{raw[:4].hex()}")
        depth = raw[4]
        parent = raw[5:9]
        child_number = int.from_bytes(raw[9:13], "big")
        chain_code = raw[13:45]
        keydata = raw[45:78]
        if depth == 0 and parent != b"\x00" * 4:
            raise InvalidKeyError("zero depth with non-zero parent fingerprint")
        if depth == 0 and child_number != 0:
            raise InvalidKeyError("zero depth with non-zero index")
        if version.private:
            if keydata[0] in (2, 3):
                raise InvalidKeyError(
                    f"{version.prefix} version with public key data (prvkey version / pubkey mismatch)"
                )
            if keydata[0] != 0:
                raise InvalidKeyError(f"invalid private key prefix {keydata[0]:02x} (must be 00)")
            secret = int.from_bytes(keydata[1:], "big")
            if not 0 < secret < SECP256K1_N:
                raise InvalidKeyError("private key is not in the range 1..n-1")
            return cls(version, depth, parent, child_number, chain_code, keydata[1:])
        if keydata[0] == 0:
            raise InvalidKeyError(f"{version.prefix} version with private key data (pubkey version / prvkey mismatch)")
        if keydata[0] not in (2, 3):
            raise InvalidKeyError(f"invalid public key prefix {keydata[0]:02x} (must be 02 or 03)")
        return cls(version, depth, parent, child_number, chain_code, keydata)

    # -- properties -------------------------------------------------------------------

    @property
    def is_private(self) -> bool:
        return self._private is not None

    @property
    def chain_code(self) -> bytes:
        return self._chain_code

    @property
    def public_key(self) -> bytes:
        """33-byte compressed public key."""
        return self._pubkey

    @property
    def private_key(self) -> bytes:
        """32-byte private key; `DerivationError` on a public key."""
        if self._private is None:
            raise DerivationError("this is a public extended key: it has no private key")
        return self._private

    @property
    def identifier(self) -> bytes:
        return hash160(self.public_key)

    @property
    def fingerprint(self) -> bytes:
        """First 4 bytes of HASH160 of the public key (what children record as parent)."""
        return self.identifier[:4]

    def networks(self) -> tuple[str, ...]:
        """Networks this key's version may be used on."""
        return ("mainnet",) if self.version.mainnet else ("testnet", "regtest")

    def check_network(self, network: str) -> ExtendedKey:
        """Self if the key's version belongs to `network`; else `WrongNetworkError`."""
        if network not in NETWORKS:
            raise WrongNetworkError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
        if network not in self.networks():
            raise WrongNetworkError(
                f"{self.version.prefix} key is for {' / '.join(self.networks())}, not {network}"
            )
        return self

    # -- serialisation ----------------------------------------------------------------

    def serialize(self) -> str:
        """Base58Check form (xpub..., zprv...). Private forms are secrets: do not log them."""
        keydata = b"\x00" + self._private if self._private is not None else self.public_key
        payload = (
            self.version.version
            + bytes([self.depth])
            + self.parent_fingerprint
            + self.child_number.to_bytes(4, "big")
            + self.chain_code
            + keydata
        )
        return b58check_encode(payload)

    def with_version(self, prefix: str) -> ExtendedKey:
        """The same node under another version (e.g. SLIP-132 zpub <-> xpub)."""
        version = version_by_prefix(prefix)
        if version.private != self.is_private:
            raise InvalidKeyError(f"cannot express a {'private' if self.is_private else 'public'} key as {prefix}")
        key = self._private if self._private is not None else self.public_key
        return ExtendedKey(version, self.depth, self.parent_fingerprint, self.child_number, self.chain_code, key)

    def neuter(self) -> ExtendedKey:
        """The public extended key (xprv -> xpub, zprv -> zpub, ...)."""
        if not self.is_private:
            return self
        public = next(
            v for v in VERSIONS
            if v.mainnet == self.version.mainnet and not v.private and v.script_type == self.version.script_type
        )
        return ExtendedKey(
            public, self.depth, self.parent_fingerprint, self.child_number, self.chain_code, self.public_key
        )

    # -- derivation -------------------------------------------------------------------

    def child(self, index: int) -> ExtendedKey:
        """CKDpriv or CKDpub for child number `index` (>= 2^31 is hardened)."""
        if not 0 <= index < 2**32:
            raise DerivationError(f"child index {index} out of range 0..2^32-1")
        if index >= HARDENED and self._private is None:
            raise DerivationError(
                f"cannot derive hardened child {format_index(index)} from a public key (needs the private key)"
            )
        if index >= HARDENED:
            assert self._private is not None
            data = b"\x00" + self._private + index.to_bytes(4, "big")
        else:
            data = self.public_key + index.to_bytes(4, "big")
        digest = hmac.digest(self.chain_code, data, "sha512")
        il, chain_code = digest[:32], digest[32:]
        if int.from_bytes(il, "big") >= SECP256K1_N:
            raise DerivationError(f"child {format_index(index)} is invalid (I_L >= n); use the next index")
        if self._private is not None:
            secret = (int.from_bytes(il, "big") + int.from_bytes(self._private, "big")) % SECP256K1_N
            if secret == 0:
                raise DerivationError(f"child {format_index(index)} is invalid (zero key); use the next index")
            key = secret.to_bytes(32, "big")
        else:
            try:
                key = PublicKey(self.public_key).add(il).format(compressed=True)
            except ValueError:
                raise DerivationError(f"child {format_index(index)} is invalid (point at infinity)") from None
        return ExtendedKey(self.version, self.depth + 1, self.fingerprint, index, chain_code, key)

    def derive(self, path: str | Iterable[int]) -> ExtendedKey:
        """Follow a path (`m/84'/0'/0'` or child numbers) from this key."""
        indices = parse_path(path) if isinstance(path, str) else list(path)
        node = self
        for index in indices:
            node = node.child(index)
        return node

    # -- dunder -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExtendedKey):
            return NotImplemented
        return self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((self.version.version, self.depth, self.child_number, self.public_key))

    def __repr__(self) -> str:
        kind = "private" if self.is_private else "public"
        return (
            f"ExtendedKey({self.version.prefix}, {kind}, depth={self.depth}, "
            f"child={format_index(self.child_number)}, fingerprint={self.fingerprint.hex()})"
        )

    __str__ = __repr__


def parse_extended_key(text: str, network: str | None = None, *, public_only: bool = False) -> ExtendedKey:
    """Parse and validate; with `network`, refuse keys of another network; with
    `public_only`, refuse private keys (the API hosts must never hold one)."""
    key = ExtendedKey.parse(text)
    if public_only and key.is_private:
        raise InvalidKeyError(f"expected an extended public key, got a private {key.version.prefix}")
    if network is not None:
        key.check_network(network)
    return key
