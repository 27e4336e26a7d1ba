"""Bitcoin chain client over the Esplora REST API (blockstream/esplora, mempool.space).

Endpoints used (shared/STACK.md): tip height, block hash by height, block header JSON, block
txs in pages of 25, tx by id, tx status, broadcast. Every call goes through the retry policy
(back-off with jitter on 429/5xx/timeouts), so a rate-limited host slows the watcher down
but never makes it skip a block. Answers are checked for shape; anything malformed raises
`InconsistentAnswerError`, which the daemon logs and retries.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from watchers._http import Sleep, request_with_retry
from watchers.errors import ChainRpcError, InconsistentAnswerError
from watchers.retry import RetryPolicy

TXS_PAGE_SIZE = 25


def _is_hex32(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 64:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True


def _first_leaf(group: BaseExceptionGroup[Exception]) -> Exception:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


class EsploraClient:
    """Async client of one Esplora host; `base_url` like `https://blockstream.info/testnet/api`."""

    def __init__(
        self,
        base_url: str,
        *,
        policy: RetryPolicy | None = None,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
        page_concurrency: int = 8,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), transport=transport)
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._page_sem = asyncio.Semaphore(page_concurrency)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> EsploraClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _get(self, path: str) -> httpx.Response:
        return await request_with_retry(self._client, "GET", path, policy=self._policy, what=f"GET {path}",
                                        sleep=self._sleep)

    async def _get_ok(self, path: str) -> httpx.Response:
        response = await self._get(path)
        if response.status_code == 404:
            raise InconsistentAnswerError(f"GET {path}: not found (404)")
        if response.status_code != 200:
            raise ChainRpcError(f"GET {path}: HTTP {response.status_code}: {response.text[:200]}")
        return response

    async def _get_json(self, path: str) -> Any:
        response = await self._get_ok(path)
        try:
            return response.json()
        except ValueError as exc:
            raise InconsistentAnswerError(f"GET {path}: body is not JSON") from exc

    async def tip_height(self) -> int:
        text = (await self._get_ok("/blocks/tip/height")).text.strip()
        if not text.isdigit():
            raise InconsistentAnswerError(f"GET /blocks/tip/height: not a height: {text[:40]!r}")
        return int(text)

    async def block_hash_at(self, height: int) -> str:
        text = (await self._get_ok(f"/block-height/{height}")).text.strip()
        if not _is_hex32(text):
            raise InconsistentAnswerError(f"GET /block-height/{height}: not a block hash: {text[:80]!r}")
        return text

    async def block(self, block_hash: str) -> dict[str, Any]:
        """Block header JSON: `id`, `height`, `previousblockhash`, `tx_count`, ..."""
        data = await self._get_json(f"/block/{block_hash}")
        if not isinstance(data, dict) or data.get("id") != block_hash or not isinstance(data.get("height"), int):
            raise InconsistentAnswerError(f"GET /block/{block_hash}: malformed block")
        if not isinstance(data.get("tx_count"), int):
            raise InconsistentAnswerError(f"GET /block/{block_hash}: no tx_count")
        prev = data.get("previousblockhash")
        if prev is not None and not _is_hex32(prev):
            raise InconsistentAnswerError(f"GET /block/{block_hash}: malformed previousblockhash")
        return data

    async def block_txs_page(self, block_hash: str, start: int) -> list[dict[str, Any]]:
        data = await self._get_json(f"/block/{block_hash}/txs/{start}")
        if not isinstance(data, list) or not all(isinstance(tx, dict) for tx in data):
            raise InconsistentAnswerError(f"GET /block/{block_hash}/txs/{start}: not a list of txs")
        return data

    async def block_txs(self, block_hash: str, tx_count: int) -> list[dict[str, Any]]:
        """All txs of a block, in block order, fetched in pages of 25 with bounded concurrency.

        Raises InconsistentAnswerError unless exactly `tx_count` txs arrive, each confirmed
        in `block_hash`: a short page is a missing tx, not the end of the block.
        """

        async def page(start: int) -> list[dict[str, Any]]:
            async with self._page_sem:
                return await self.block_txs_page(block_hash, start)

        starts = range(0, tx_count, TXS_PAGE_SIZE)
        try:
            # A TaskGroup cancels the other pages as soon as one fails (gather would leave them running).
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(page(s)) for s in starts]
        except ExceptionGroup as failed:
            raise _first_leaf(failed) from None
        txs = [tx for task in tasks for tx in task.result()]
        if len(txs) != tx_count:
            raise InconsistentAnswerError(f"block {block_hash}: {len(txs)} txs served, header says {tx_count}")
        for tx in txs:
            status = tx.get("status")
            if not isinstance(status, dict) or status.get("block_hash") != block_hash:
                raise InconsistentAnswerError(f"block {block_hash}: tx {tx.get('txid')!r} not confirmed in it")
        return txs

    async def tx(self, txid: str) -> dict[str, Any] | None:
        """A tx by id, or None if the host does not know it."""
        response = await self._get(f"/tx/{txid}")
        if response.status_code in (400, 404):
            return None
        if response.status_code != 200:
            raise ChainRpcError(f"GET /tx/{txid}: HTTP {response.status_code}")
        data = response.json()
        if not isinstance(data, dict) or data.get("txid") != txid:
            raise InconsistentAnswerError(f"GET /tx/{txid}: malformed tx")
        return data

    async def tx_status(self, txid: str) -> dict[str, Any] | None:
        response = await self._get(f"/tx/{txid}/status")
        if response.status_code in (400, 404):
            return None
        if response.status_code != 200:
            raise ChainRpcError(f"GET /tx/{txid}/status: HTTP {response.status_code}")
        data = response.json()
        if not isinstance(data, dict) or not isinstance(data.get("confirmed"), bool):
            raise InconsistentAnswerError(f"GET /tx/{txid}/status: malformed status")
        return data

    async def broadcast(self, raw_tx_hex: str) -> str:
        """POST /tx; returns the txid. A rejection (HTTP 400) raises ChainRpcError with the node's reason."""
        response = await request_with_retry(self._client, "POST", "/tx", policy=self._policy, what="POST /tx",
                                            content=raw_tx_hex, sleep=self._sleep)
        if response.status_code != 200:
            raise ChainRpcError(f"POST /tx rejected: HTTP {response.status_code}: {response.text[:200]}")
        txid = response.text.strip()
        if not _is_hex32(txid):
            raise InconsistentAnswerError("POST /tx: answer is not a txid")
        return txid

    async def fee_estimates(self) -> dict[str, float]:
        """Confirmation target (blocks, as text) -> sat/vB, as Esplora serves it."""
        data = await self._get_json("/fee-estimates")
        if not isinstance(data, dict):
            raise InconsistentAnswerError("GET /fee-estimates: not an object")
        return {str(k): float(v) for k, v in data.items()}
