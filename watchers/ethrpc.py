"""Ethereum chain client: plain JSON-RPC 2.0 over httpx, with the watchers' retry policy.

Covers what the watcher and the withdrawals need: block number, blocks by number or tag
(`latest`, `safe`, `finalized`), ERC-20 `Transfer` logs of configured token contracts,
receipts, nonces and raw-transaction broadcast. Quantities are hex strings on the wire and
Python ints here (wei, never float). Transport failures and HTTP 429/5xx are retried with
back-off and jitter; a JSON-RPC error object raises `ChainRpcError` (not retried: the node
answered).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx

from watchers._http import Sleep, request_with_retry
from watchers.errors import ChainRpcError, InconsistentAnswerError
from watchers.retry import RetryPolicy

# keccak256("Transfer(address,address,uint256)"), EIP-20.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
BLOCK_TAGS = ("latest", "safe", "finalized", "earliest", "pending")


def hex_int(value: object, what: str) -> int:
    """A JSON-RPC quantity ("0x1a") as an int; InconsistentAnswerError if it is not one."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise InconsistentAnswerError(f"{what}: not a hex quantity: {str(value)[:40]!r}")


def block_param(block: int | str) -> str:
    if isinstance(block, int):
        if block < 0:
            raise ValueError("block number must be >= 0")
        return hex(block)
    if block not in BLOCK_TAGS:
        raise ValueError(f"unknown block tag {block!r}")
    return block


def topic_address(topic: str) -> str:
    """The address in an indexed `address` topic (32 bytes, left-padded), lowercase 0x.."""
    if not isinstance(topic, str) or len(topic) != 66 or not topic.startswith("0x"):
        raise InconsistentAnswerError(f"malformed log topic {str(topic)[:70]!r}")
    return "0x" + topic[-40:].lower()


class EthRpcClient:
    """Async JSON-RPC client of one Ethereum node URL."""

    def __init__(
        self,
        url: str,
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=url, transport=transport)
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._ids = itertools.count(1)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> EthRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def call(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call; returns `result` (may be None)."""
        request_id = next(self._ids)
        payload = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        response = await request_with_retry(self._client, "POST", "", policy=self._policy, what=method,
                                            json=payload, sleep=self._sleep)
        if response.status_code != 200:
            raise ChainRpcError(f"{method}: HTTP {response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as exc:
            raise InconsistentAnswerError(f"{method}: body is not JSON") from exc
        if not isinstance(body, dict) or body.get("id") != request_id:
            raise InconsistentAnswerError(f"{method}: answer does not match the request id")
        error = body.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            raise ChainRpcError(f"{method}: node error {code}: {str(message)[:200]}")
        return body.get("result")

    async def chain_id(self) -> int:
        return hex_int(await self.call("eth_chainId", []), "eth_chainId")

    async def block_number(self) -> int:
        return hex_int(await self.call("eth_blockNumber", []), "eth_blockNumber")

    async def get_block(self, block: int | str, *, full_transactions: bool = True) -> dict[str, Any] | None:
        """The block (with full tx objects by default), or None if the node has no such block."""
        result = await self.call("eth_getBlockByNumber", [block_param(block), full_transactions])
        if result is None:
            return None
        if not isinstance(result, dict) or not isinstance(result.get("hash"), str):
            raise InconsistentAnswerError(f"eth_getBlockByNumber({block}): malformed block")
        if not isinstance(result.get("transactions"), list):
            raise InconsistentAnswerError(f"eth_getBlockByNumber({block}): no transactions list")
        return result

    async def tag_height(self, tag: str) -> int | None:
        """Height of the `safe` / `finalized` / `latest` block; None if the node does not know the tag."""
        try:
            block = await self.get_block(tag, full_transactions=False)
        except ChainRpcError:
            return None
        if block is None:
            return None
        return hex_int(block.get("number"), f"block {tag}")

    async def transfer_logs(self, from_block: int, to_block: int, contracts: list[str]) -> list[dict[str, Any]]:
        """ERC-20 Transfer logs emitted by `contracts` in [from_block, to_block] (inclusive)."""
        if not contracts:
            return []
        flt = {"fromBlock": hex(from_block), "toBlock": hex(to_block),
               "address": [c.lower() for c in contracts], "topics": [TRANSFER_TOPIC]}
        result = await self.call("eth_getLogs", [flt])
        if not isinstance(result, list) or not all(isinstance(x, dict) for x in result):
            raise InconsistentAnswerError("eth_getLogs: not a list of logs")
        return result

    async def get_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self.call("eth_getTransactionReceipt", [tx_hash])
        if result is not None and not isinstance(result, dict):
            raise InconsistentAnswerError("eth_getTransactionReceipt: malformed receipt")
        return result

    async def get_transaction(self, tx_hash: str) -> dict[str, Any] | None:
        result = await self.call("eth_getTransactionByHash", [tx_hash])
        if result is not None and not isinstance(result, dict):
            raise InconsistentAnswerError("eth_getTransactionByHash: malformed tx")
        return result

    async def nonce(self, address: str, block: str = "pending") -> int:
        return hex_int(await self.call("eth_getTransactionCount", [address, block]), "eth_getTransactionCount")

    async def balance_wei(self, address: str, block: int | str = "latest") -> int:
        return hex_int(await self.call("eth_getBalance", [address, block_param(block)]), "eth_getBalance")

    async def send_raw_transaction(self, raw_tx_hex: str) -> str:
        raw = raw_tx_hex if raw_tx_hex.startswith("0x") else "0x" + raw_tx_hex
        result = await self.call("eth_sendRawTransaction", [raw])
        if not isinstance(result, str):
            raise InconsistentAnswerError("eth_sendRawTransaction: no tx hash")
        return result
