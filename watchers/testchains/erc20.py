"""The Coffer test ERC-20 token: its committed ABI and bytecode, calldata, and a deploy helper.

`TestToken.sol` (beside this module) is compiled by scripts/build-erc20.sh (npm solc 0.8.x)
into `TestToken.bin` and `TestToken.abi.json`, which are committed so nothing here needs a
compiler. `deploy_erc20(rpc_url)` deploys it on a local test chain with a real signed
transaction from the chain's faucet account (the token's minter) and returns its address.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from watchers.testchains.errors import ChainServerError

_DIR = Path(__file__).resolve().parent
# keccak256("Transfer(address,address,uint256)"), the ERC-20 Transfer event's topic0.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
TOKEN_DECIMALS = 6


@cache
def abi() -> list[dict[str, Any]]:
    """The token's ABI as committed (TestToken.abi.json)."""
    data: list[dict[str, Any]] = json.loads((_DIR / "TestToken.abi.json").read_text(encoding="utf-8"))
    return data


@cache
def bytecode() -> bytes:
    """The token's creation bytecode as committed (TestToken.bin)."""
    return bytes.fromhex((_DIR / "TestToken.bin").read_text(encoding="ascii").strip())


def _selector(signature: str) -> bytes:
    from eth_utils.crypto import keccak

    return bytes(keccak(text=signature))[:4]


def _encode(types: list[str], values: list[Any]) -> bytes:
    from eth_abi.abi import encode

    return bytes(encode(types, values))


def deploy_data(name: str, symbol: str) -> bytes:
    """Creation bytecode followed by the ABI-encoded constructor(name, symbol)."""
    return bytecode() + _encode(["string", "string"], [name, symbol])


def _address_arg(address: bytes | str) -> str:
    raw = bytes.fromhex(address[2:]) if isinstance(address, str) else address
    if len(raw) != 20:
        raise ChainServerError("an ERC-20 address argument must be 20 bytes")
    return "0x" + raw.hex()


def mint_data(to: bytes | str, amount: int) -> bytes:
    """Calldata of mint(to, amount) (amount in token base units, 6 decimals)."""
    return _selector("mint(address,uint256)") + _encode(["address", "uint256"], [_address_arg(to), amount])


def transfer_data(to: bytes | str, amount: int) -> bytes:
    """Calldata of transfer(to, amount) (amount in token base units)."""
    return _selector("transfer(address,uint256)") + _encode(["address", "uint256"], [_address_arg(to), amount])


def balance_of_data(owner: bytes | str) -> bytes:
    """Calldata of balanceOf(owner)."""
    return _selector("balanceOf(address)") + _encode(["address"], [_address_arg(owner)])


def rpc(url: str, method: str, params: list[Any], timeout_s: float = 30.0) -> Any:
    """One JSON-RPC call to a test chain (sync, httpx); ChainServerError on an error answer."""
    import httpx

    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                        timeout=timeout_s).json()
    if "error" in answer:
        raise ChainServerError(f"{method}: {answer['error'].get('message')}")
    return answer["result"]


def deploy_erc20(url: str, name: str = "Tether USD (test)", symbol: str = "USDT") -> str:
    """Deploy the test token on the chain at `url`; mines a block if the chain does not auto-mine.

    Returns the token's checksummed address. The chain's faucet account is the minter.
    """
    txid = rpc(url, "coffer_deployErc20", [name, symbol])
    receipt = rpc(url, "eth_getTransactionReceipt", [txid])
    if receipt is None:
        rpc(url, "evm_mine", [1])
        receipt = rpc(url, "eth_getTransactionReceipt", [txid])
    if receipt is None or receipt.get("contractAddress") is None or int(receipt["status"], 16) != 1:
        raise ChainServerError(f"token deployment {txid} failed")
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(receipt["contractAddress"]))
