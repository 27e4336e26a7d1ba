"""Address encodings and validation for Bitcoin (P2WPKH, P2TR, legacy base58) and Ethereum.

Pure functions, no I/O. Encoders turn public keys into addresses for an explicit network:
P2WPKH (BIP141/173, bech32), P2TR key-path with the BIP86 tweak (BIP341/350, bech32m), and
Ethereum addresses (Keccak-256 of the uncompressed key, EIP-55 checksummed).
`validate_address(address, chain, network)` is what the withdrawal path and the deposit
registry use: it checks checksum, network and witness version and returns the normalised
address (lower-case bech32, EIP-55 for Ethereum) or raises `InvalidAddressError` with the reason.
"""

from __future__ import annotations

from coincurve import PublicKey
from coincurve.keys import PublicKeyXOnly

from wallet.base58 import b58check_decode
from wallet.bech32 import decode_segwit, encode_segwit
from wallet.errors import InvalidAddressError, InvalidKeyError, WalletError
from wallet.hashes import hash160, keccak256, tagged_hash
from wallet.networks import BASE58_VERSIONS, BECH32_HRP, NETWORKS, check_chain

_HEX = frozenset("0123456789abcdefABCDEF")


def _check_pubkey(pubkey: bytes) -> None:
    if len(pubkey) != 33 or pubkey[0] not in (2, 3):
        raise InvalidKeyError("expected a 33-byte compressed public key")


def _hrp(network: str) -> str:
    try:
        return BECH32_HRP[network]
    except KeyError:
        raise WalletError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})") from None


def p2wpkh_address(pubkey: bytes, network: str) -> str:
    """Native segwit v0 address of a compressed public key (BIP84 deposit addresses)."""
    _check_pubkey(pubkey)
    return encode_segwit(_hrp(network), 0, hash160(pubkey))


def taproot_output_key(internal_pubkey: bytes) -> bytes:
    """BIP86 output key: the x-only internal key tweaked by hash_TapTweak(x) (no script tree)."""
    _check_pubkey(internal_pubkey)
    xonly = internal_pubkey[1:]
    key = PublicKeyXOnly(xonly)
    key.tweak_add(tagged_hash("TapTweak", xonly))
    return bytes(key.format())


def p2tr_address(internal_pubkey: bytes, network: str) -> str:
    """Taproot key-path-only address (BIP86) of a compressed internal public key."""
    return encode_segwit(_hrp(network), 1, taproot_output_key(internal_pubkey))


def eth_address_from_pubkey(pubkey: bytes) -> str:
    """EIP-55 checksummed Ethereum address of a public key (33-byte compressed or 65-byte)."""
    if len(pubkey) == 33:
        _check_pubkey(pubkey)
        pubkey = PublicKey(pubkey).format(compressed=False)
    if len(pubkey) != 65 or pubkey[0] != 4:
        raise InvalidKeyError("expected a 33-byte compressed or 65-byte uncompressed public key")
    return to_checksum_address(keccak256(pubkey[1:])[-20:].hex())


def to_checksum_address(hex_address: str) -> str:
    """EIP-55 mixed-case form of a 40-hex-digit address (with or without 0x)."""
    body = hex_address[2:] if hex_address[:2] in ("0x", "0X") else hex_address
    if len(body) != 40 or not set(body) <= _HEX:
        raise InvalidAddressError("an Ethereum address is 0x followed by 40 hexadecimal digits")
    body = body.lower()
    digest = keccak256(body.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(h, 16) >= 8 else c for c, h in zip(body, digest[:40], strict=True))


def validate_eth_address(address: str) -> str:
    """The EIP-55 form of `address`; a mixed-case input must carry a correct EIP-55 checksum."""
    if not address.startswith("0x"):
        raise InvalidAddressError("an Ethereum address starts with 0x")
    body = address[2:]
    if len(body) != 40 or not set(body) <= _HEX:
        raise InvalidAddressError("an Ethereum address is 0x followed by 40 hexadecimal digits")
    checksummed = to_checksum_address(body)
    if body != body.lower() and body != body.upper() and checksummed != address:
        raise InvalidAddressError("Ethereum address has a wrong EIP-55 checksum (mistyped or corrupted)")
    if int(body, 16) == 0:
        raise InvalidAddressError("the zero address cannot receive funds")
    return checksummed


def _validate_btc(address: str, network: str) -> str:
    expected_hrp = _hrp(network)
    lowered = address.lower()
    sep = lowered.rfind("1")
    hrp = lowered[:sep] if sep > 0 else ""
    if hrp in BECH32_HRP.values():
        if hrp != expected_hrp:
            other = next(n for n, h in BECH32_HRP.items() if h == hrp)
            raise InvalidAddressError(f"address is for Bitcoin {other}, not {network}")
        _, version, program = decode_segwit(address)
        if version == 0:
            return lowered
        if version == 1:
            if len(program) != 32:
                raise InvalidAddressError(f"taproot (v1) program has {len(program)} bytes (must be 32)")
            return lowered
        raise InvalidAddressError(f"witness version {version} is not supported yet (only v0 and v1)")
    if address[:1] in ("b", "t", "B", "T") and "1" in address[1:5]:
        # Looks like bech32 with an hrp we do not know.
        raise InvalidAddressError(f"unknown bech32 prefix {hrp!r} for Bitcoin {network} (expected {expected_hrp!r})")
    try:
        payload = b58check_decode(address, InvalidAddressError)
    except InvalidAddressError as exc:
        raise InvalidAddressError(f"not a valid Bitcoin address: {exc}") from None
    if len(payload) != 21:
        raise InvalidAddressError("base58 address payload must be 21 bytes")
    version = payload[0]
    if version in BASE58_VERSIONS[network]:
        return address
    for other, versions in BASE58_VERSIONS.items():
        if version in versions:
            raise InvalidAddressError(f"address is for Bitcoin {other}, not {network}")
    raise InvalidAddressError(f"unknown base58 address version byte 0x{version:02x}")


def validate_address(address: str, chain: str, network: str) -> str:
    """Normalised `address` for `chain`/`network`, or `InvalidAddressError` saying why not.

    Bitcoin: bech32 v0 (P2WPKH, P2WSH), bech32m v1 (P2TR) and base58 P2PKH/P2SH; bech32 is
    returned lower-case. Ethereum: returned EIP-55 checksummed; all-lower and all-upper
    inputs are accepted, mixed case must match EIP-55.
    """
    if not isinstance(address, str) or not address:
        raise InvalidAddressError("address is empty")
    if address != address.strip():
        raise InvalidAddressError("address has leading or trailing whitespace")
    if network not in NETWORKS:
        raise InvalidAddressError(f"unknown network {network!r} (expected one of: {', '.join(NETWORKS)})")
    try:
        check_chain(chain)
    except WalletError as exc:
        raise InvalidAddressError(str(exc)) from None
    if chain == "eth":
        return validate_eth_address(address)
    return _validate_btc(address, network)
