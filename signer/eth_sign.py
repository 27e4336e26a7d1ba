"""Ethereum transaction signing: legacy EIP-155 (type 0) and EIP-1559 (type 2), no I/O.

A transaction arrives as a JSON description (see `parse_eth_tx`): integers as JSON integers
or decimal strings (never floats), `data` as 0x-hex, `to` as a 20-byte address (EIP-55
checksum verified when mixed case). Serialization is our own RLP (Ethereum yellow paper,
appendix B), the signing hash is Keccak-256 of the EIP-155 nine-field list or of
`0x02 || rlp(payload)` (EIP-2718/EIP-1559), and the signature is libsecp256k1's RFC6979
recoverable ECDSA via coincurve, so the tests can compare it with eth-account independently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from signer.errors import EthTxRefusedError

_UINT256 = 2**256
ERC20_TRANSFER_SELECTOR = bytes.fromhex("a9059cbb")  # keccak256("transfer(address,uint256)")[:4]
DEFAULT_MAX_FEE_WEI = 10**17  # refuse a transaction whose gas could cost more than 0.1 ETH
_FIELDS = {
    0: ("type", "chain_id", "nonce", "to", "value", "gas", "gas_price", "data", "derivation_path"),
    2: ("type", "chain_id", "nonce", "to", "value", "gas", "max_fee_per_gas", "max_priority_fee_per_gas",
        "data", "derivation_path", "access_list"),
}


def keccak256(data: bytes) -> bytes:
    from eth_hash.auto import keccak

    return bytes(keccak(data))


def rlp_encode(item: bytes | int | list[Any]) -> bytes:
    """RLP of bytes, non-negative ints (minimal big-endian) and nested lists."""
    if isinstance(item, int):
        if item < 0:
            raise ValueError("RLP cannot encode negative integers")
        item = item.to_bytes((item.bit_length() + 7) // 8, "big") if item else b""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _rlp_length(len(item), 0x80) + item
    payload = b"".join(rlp_encode(x) for x in item)
    return _rlp_length(len(payload), 0xC0) + payload


def _rlp_length(length: int, offset: int) -> bytes:
    if length <= 55:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def to_checksum_address(address20: bytes) -> str:
    """EIP-55 mixed-case checksum encoding of a 20-byte address."""
    hex_addr = address20.hex()
    digest = keccak256(hex_addr.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(hex_addr))


def parse_address(text: object, field: str = "to") -> bytes:
    if not isinstance(text, str) or not text.startswith("0x") or len(text) != 42:
        raise EthTxRefusedError(f"'{field}' must be a 0x-prefixed 20-byte hex address")
    try:
        raw = bytes.fromhex(text[2:])
    except ValueError:
        raise EthTxRefusedError(f"'{field}' is not hex: {text!r}") from None
    body = text[2:]
    if body != body.lower() and body != body.upper() and to_checksum_address(raw) != text:
        raise EthTxRefusedError(f"'{field}' {text} fails its EIP-55 checksum (mistyped address?)")
    return raw


def _uint(doc: dict[str, Any], name: str) -> int:
    if name not in doc:
        raise EthTxRefusedError(f"transaction field '{name}' is missing")
    value = doc[name]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise EthTxRefusedError(f"'{name}' must be an integer or a decimal string, got {type(value).__name__}")
    if isinstance(value, str):
        if not value.isdigit():
            raise EthTxRefusedError(f"'{name}' must be a non-negative decimal integer string, got {value!r}")
        value = int(value)
    if not 0 <= value < _UINT256:
        raise EthTxRefusedError(f"'{name}' is out of range: {value}")
    return value


@dataclass(frozen=True, slots=True)
class EthTx:
    """An unsigned Ethereum transaction (type 0 with EIP-155, or type 2)."""

    tx_type: int
    chain_id: int
    nonce: int
    to: bytes
    value_wei: int
    gas: int
    data: bytes
    derivation_path: str
    gas_price_wei: int = 0
    max_fee_per_gas_wei: int = 0
    max_priority_fee_per_gas_wei: int = 0
    access_list: tuple[tuple[bytes, tuple[bytes, ...]], ...] = ()

    @property
    def max_fee_wei(self) -> int:
        """The most the gas can cost: gas * (gas_price | max_fee_per_gas)."""
        return self.gas * (self.gas_price_wei if self.tx_type == 0 else self.max_fee_per_gas_wei)

    def _access_list_rlp(self) -> list[Any]:
        return [[addr, list(keys)] for addr, keys in self.access_list]

    def signing_payload(self) -> bytes:
        """The bytes whose Keccak-256 is signed."""
        if self.tx_type == 0:
            return rlp_encode([self.nonce, self.gas_price_wei, self.gas, self.to, self.value_wei, self.data,
                               self.chain_id, 0, 0])
        return b"\x02" + rlp_encode(self._type2_fields())

    def _type2_fields(self) -> list[Any]:
        return [self.chain_id, self.nonce, self.max_priority_fee_per_gas_wei, self.max_fee_per_gas_wei, self.gas,
                self.to, self.value_wei, self.data, self._access_list_rlp()]

    def summary_lines(self, from_address: str) -> list[str]:
        whole, frac = divmod(self.value_wei, 10**18)
        fee_whole, fee_frac = divmod(self.max_fee_wei, 10**18)
        kind = "EIP-1559 (type 2)" if self.tx_type == 2 else "legacy EIP-155 (type 0)"
        return [
            f"Ethereum {kind} transaction, chain id {self.chain_id}, nonce {self.nonce}",
            f"  from  {from_address} ({self.derivation_path})",
            f"  to    {to_checksum_address(self.to)}",
            f"  value {whole}.{frac:018d} ETH ({self.value_wei} wei)",
            f"  max fee {fee_whole}.{fee_frac:018d} ETH ({self.max_fee_wei} wei, gas {self.gas})",
            f"  data  {len(self.data)} bytes" + (f": 0x{self.data[:36].hex()}..." if self.data else ""),
            *self._erc20_lines(),
        ]

    def _erc20_lines(self) -> list[str]:
        """Decode an ERC-20 `transfer(address,uint256)` call, so the officer sees the real recipient."""
        if len(self.data) != 68 or self.data[:4] != ERC20_TRANSFER_SELECTOR or any(self.data[4:16]):
            return []
        recipient = to_checksum_address(self.data[16:36])
        amount = int.from_bytes(self.data[36:68], "big")
        return [f"  ERC-20 transfer on token {to_checksum_address(self.to)}: {amount} base units to {recipient}"]


def parse_eth_tx(text: str | bytes) -> EthTx:
    """Parse and validate the JSON description of a transaction (raises EthTxRefusedError)."""

    def no_float(s: str) -> Any:
        raise EthTxRefusedError(f"numbers must be integers or decimal strings, not floats ({s})")

    try:
        doc = json.loads(text, parse_float=no_float)
    except EthTxRefusedError:
        raise
    except ValueError as exc:
        raise EthTxRefusedError(f"transaction file is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EthTxRefusedError("transaction file must hold a JSON object")
    tx_type = doc.get("type")
    if tx_type not in _FIELDS or isinstance(tx_type, bool):
        raise EthTxRefusedError(f"'type' must be 2 (EIP-1559) or 0 (legacy EIP-155), got {tx_type!r}")
    unknown = set(doc) - set(_FIELDS[tx_type])
    if unknown:
        raise EthTxRefusedError(f"unknown field(s) for a type {tx_type} transaction: {', '.join(sorted(unknown))}")
    data_hex = doc.get("data", "0x")
    if not isinstance(data_hex, str) or not data_hex.startswith("0x"):
        raise EthTxRefusedError("'data' must be 0x-prefixed hex")
    try:
        data = bytes.fromhex(data_hex[2:])
    except ValueError:
        raise EthTxRefusedError("'data' is not valid hex") from None
    path = doc.get("derivation_path")
    if not isinstance(path, str) or not path.replace("'", "h").startswith("m/44h/60h/"):
        raise EthTxRefusedError("'derivation_path' must be an Ethereum path m/44'/60'/...")
    chain_id = _uint(doc, "chain_id")
    if chain_id == 0:
        raise EthTxRefusedError("'chain_id' must be positive (replay protection)")
    common = {
        "tx_type": tx_type, "chain_id": chain_id, "nonce": _uint(doc, "nonce"),
        "to": parse_address(doc.get("to")), "value_wei": _uint(doc, "value"), "gas": _uint(doc, "gas"),
        "data": data, "derivation_path": path,
    }
    if tx_type == 0:
        return EthTx(**common, gas_price_wei=_uint(doc, "gas_price"))
    max_fee, tip = _uint(doc, "max_fee_per_gas"), _uint(doc, "max_priority_fee_per_gas")
    if tip > max_fee:
        raise EthTxRefusedError("'max_priority_fee_per_gas' is above 'max_fee_per_gas'")
    return EthTx(**common, max_fee_per_gas_wei=max_fee, max_priority_fee_per_gas_wei=tip,
                 access_list=_access_list(doc.get("access_list", [])))


def _access_list(raw: object) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    if not isinstance(raw, list):
        raise EthTxRefusedError("'access_list' must be a list")
    out = []
    for entry in raw:
        if not isinstance(entry, dict) or set(entry) != {"address", "storage_keys"}:
            raise EthTxRefusedError("each access_list entry needs exactly 'address' and 'storage_keys'")
        keys = entry["storage_keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) and len(k) == 66 for k in keys):
            raise EthTxRefusedError("storage_keys must be 0x-prefixed 32-byte hex strings")
        try:
            out.append((parse_address(entry["address"], "access_list.address"),
                        tuple(bytes.fromhex(k[2:]) for k in keys)))
        except ValueError:
            raise EthTxRefusedError("storage key is not hex") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SignedEthTx:
    raw: bytes
    tx_hash: str  # 0x-hex Keccak-256 of `raw`
    from_address: str

    @property
    def raw_hex(self) -> str:
        return "0x" + self.raw.hex()


def address_of(private_key: bytes) -> str:
    """The EIP-55 address of a secp256k1 private key."""
    from coincurve import PrivateKey

    pub = PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak256(pub)[-20:])


def sign_eth_tx(tx: EthTx, private_key: bytes, *, max_fee_wei: int = DEFAULT_MAX_FEE_WEI) -> SignedEthTx:
    """Sign `tx` with a 32-byte secp256k1 key; refuses a fee above `max_fee_wei`."""
    from coincurve import PrivateKey

    if tx.max_fee_wei > max_fee_wei:
        raise EthTxRefusedError(f"maximum fee {tx.max_fee_wei} wei is above the cap of {max_fee_wei} wei")
    digest = keccak256(tx.signing_payload())
    sig = PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    r, s, rec_id = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    if tx.tx_type == 0:
        v = tx.chain_id * 2 + 35 + rec_id  # EIP-155
        raw = rlp_encode([tx.nonce, tx.gas_price_wei, tx.gas, tx.to, tx.value_wei, tx.data, v, r, s])
    else:
        raw = b"\x02" + rlp_encode([*tx._type2_fields(), rec_id, r, s])
    return SignedEthTx(raw, "0x" + keccak256(raw).hex(), address_of(private_key))


def derive_eth_key(root: Any, derivation_path: str) -> bytes:
    """The 32-byte private key at an m/44'/60'/... path below an embit root HDKey."""
    from signer.hd import derive, parse_path

    return bytes(derive(root, parse_path(derivation_path)).key.secret)
