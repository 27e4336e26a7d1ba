"""Ethereum withdrawal transactions, pure: EIP-1559 fees from `eth_feeHistory`, transfers, bumps.

A transaction is described as the JSON that `signer.eth_sign.parse_eth_tx` reads (type 2,
integers as decimal strings, `derivation_path` of the sending hot key). ETH goes as `value`;
an ERC-20 amount goes as `transfer(to, amount)` calldata (EIP-20) to the token contract with
value 0. Fees: the priority fee is the median of the per-block rewards at the 50th percentile
over the history (at least `min_tip_wei`), and the fee cap is twice the next block's base fee
plus that tip, so the transaction stays includable through six full blocks of base-fee rises
(each at most +12.5%, EIP-1559). A replacement at the same nonce raises both by at least 10%
(the rule of geth's and our test chain's mempools) — here by 12.5%, rounded up. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.withdrawals_proc.errors import BuildError

ETH_TRANSFER_GAS = 21_000
ERC20_TRANSFER_GAS = 100_000  # OpenZeppelin-style transfer uses ~35-52k; the rest is unused and refunded
ERC20_TRANSFER_SELECTOR = "a9059cbb"  # keccak256("transfer(address,uint256)")[:4], EIP-20
DEFAULT_MIN_TIP_WEI = 10**9
BUMP_NUMERATOR, BUMP_DENOMINATOR = 9, 8  # +12.5% >= the 10% replacement rule


@dataclass(frozen=True, slots=True)
class Fees:
    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int


def _q(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        return int(value, 16)
    raise BuildError(f"fee history: not a quantity: {value!r}")


def fees_from_history(history: Mapping[str, Any], *, min_tip_wei: int = DEFAULT_MIN_TIP_WEI) -> Fees:
    """EIP-1559 fees from an `eth_feeHistory(blocks, 'latest', [50])` answer (see module doc)."""
    base_fees = history.get("baseFeePerGas")
    if not isinstance(base_fees, list) or not base_fees:
        raise BuildError("fee history has no baseFeePerGas")
    next_base = _q(base_fees[-1])
    tips = sorted(_q(r[0]) for r in history.get("reward") or [] if isinstance(r, list) and r)
    tip = max(min_tip_wei, tips[len(tips) // 2] if tips else 0)
    return Fees(2 * next_base + tip, tip)


def bumped(fees: Fees, floor: Fees | None = None) -> Fees:
    """Fees at least 12.5% above `fees` (rounded up), and at least `floor` (current market)."""
    fee = -(-fees.max_fee_per_gas_wei * BUMP_NUMERATOR // BUMP_DENOMINATOR)
    tip = -(-fees.max_priority_fee_per_gas_wei * BUMP_NUMERATOR // BUMP_DENOMINATOR)
    if floor is not None:
        fee = max(fee, floor.max_fee_per_gas_wei)
        tip = max(tip, floor.max_priority_fee_per_gas_wei)
    return Fees(max(fee, tip), tip)


def erc20_transfer_data(to: str, amount: int) -> str:
    """0x calldata of `transfer(to, amount)` (EIP-20; ABI: address and uint256 as 32-byte words)."""
    if not (to.startswith("0x") and len(to) == 42):
        raise BuildError(f"not an Ethereum address: {to!r}")
    if not 0 < amount < 2**256:
        raise BuildError(f"token amount out of range: {amount}")
    return "0x" + ERC20_TRANSFER_SELECTOR + bytes(12).hex() + to[2:].lower() + amount.to_bytes(32, "big").hex()


def transfer_tx(*, chain_id: int, nonce: int, destination: str, amount: int, fees: Fees, derivation_path: str,
                token_contract: str | None) -> dict[str, Any]:
    """The unsigned type-2 transaction sending `amount` (wei, or token base units) to `destination`."""
    if amount <= 0:
        raise BuildError("amount must be positive")
    if token_contract is None:
        to, value, data, gas = destination, amount, "0x", ETH_TRANSFER_GAS
    else:
        to, value, data, gas = token_contract, 0, erc20_transfer_data(destination, amount), ERC20_TRANSFER_GAS
    return {
        "type": 2, "chain_id": str(chain_id), "nonce": str(nonce), "to": to, "value": str(value), "gas": str(gas),
        "max_fee_per_gas": str(fees.max_fee_per_gas_wei),
        "max_priority_fee_per_gas": str(fees.max_priority_fee_per_gas_wei),
        "data": data, "derivation_path": derivation_path,
    }


def with_fees(tx: Mapping[str, Any], fees: Fees) -> dict[str, Any]:
    out = dict(tx)
    out["max_fee_per_gas"] = str(fees.max_fee_per_gas_wei)
    out["max_priority_fee_per_gas"] = str(fees.max_priority_fee_per_gas_wei)
    return out


def tx_fees(tx: Mapping[str, Any]) -> Fees:
    return Fees(int(tx["max_fee_per_gas"]), int(tx["max_priority_fee_per_gas"]))


def max_fee_wei(tx: Mapping[str, Any]) -> int:
    return int(tx["gas"]) * int(tx["max_fee_per_gas"])


def dumps(tx: Mapping[str, Any]) -> str:
    return json.dumps(tx, sort_keys=True)


def loads(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise BuildError("transaction JSON is not an object")
    return doc
