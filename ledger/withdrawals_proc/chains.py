"""The chain API calls the withdrawal processor makes, over the watchers' Esplora and JSON-RPC clients.

`BtcApi` adds what the watcher's `EsploraClient` does not need: an address's UTXOs
(`/address/:a/utxo`), a transaction's raw hex (`/tx/:txid/hex`, for the PSBT's non-witness
UTXO) and a fee rate from `/fee-estimates` with a floor. `EthApi` adds `eth_feeHistory`.
Broadcast answers are sorted into "the node has it" (accepted now, or already known / already
in the chain: the same transaction was sent before a crash), "refused for good"
(`BroadcastRejectedError`) and transient failures (`watchers.errors.ChainClientError`, retried
by the processor's next pass).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from ledger.withdrawals_proc.errors import BroadcastRejectedError
from watchers.errors import ChainRpcError, InconsistentAnswerError
from watchers.esplora import EsploraClient
from watchers.ethrpc import EthRpcClient, hex_int

_BTC_KNOWN = ("txn-already-in-mempool", "already in block chain", "txn-already-known")
_ETH_KNOWN = ("already known", "alreadyknown")
# A lower nonce is not in the node's pool yet (e.g. it was sent to another node, or is being
# re-broadcast): not a refusal of this transaction, retried on the next pass.
_ETH_LATER = ("nonce gap", "nonce too high")


class BtcApi(EsploraClient):
    """Esplora client with the processor's extra endpoints."""

    async def address_utxos(self, address: str) -> list[dict[str, Any]]:
        data = await self._get_json(f"/address/{address}/utxo")
        if not isinstance(data, list):
            raise InconsistentAnswerError(f"GET /address/{address}/utxo: not a list")
        return [u for u in data if isinstance(u, dict)]

    async def tx_hex(self, txid: str) -> str:
        return (await self._get_ok(f"/tx/{txid}/hex")).text.strip()

    async def fee_rate_msat_per_vb(self, *, target_blocks: int, floor_msat_per_vb: int) -> int:
        """The estimate for the smallest target >= `target_blocks` (else the largest), in milli-sat per
        vbyte, never below the floor."""
        estimates = await self.fee_estimates()
        usable = sorted((int(k), v) for k, v in estimates.items() if k.isdigit())
        rate = None
        for target, sat_vb in usable:
            if target >= target_blocks:
                rate = sat_vb
                break
        if rate is None and usable:
            rate = usable[-1][1]
        msat = int(Decimal(str(rate)) * 1000) if rate is not None else 0
        return max(msat, floor_msat_per_vb)

    async def send(self, raw_hex: str, txid: str) -> str:
        """Broadcast; returns the txid when the node has the transaction (now or already)."""
        try:
            return await self.broadcast(raw_hex)
        except ChainRpcError as exc:
            text = str(exc)
            if any(k in text for k in _BTC_KNOWN):
                return txid
            if "HTTP 400" in text:
                raise BroadcastRejectedError(f"node refused {txid}: {text}") from None
            raise


class EthApi(EthRpcClient):
    """JSON-RPC client with `eth_feeHistory` and broadcast classification."""

    async def fee_history(self, blocks: int = 10, percentile: int = 50) -> dict[str, Any]:
        result = await self.call("eth_feeHistory", [hex(blocks), "latest", [percentile]])
        if not isinstance(result, dict):
            raise InconsistentAnswerError("eth_feeHistory: not an object")
        return result

    async def send(self, raw_hex: str, tx_hash: str) -> str:
        try:
            return await self.send_raw_transaction(raw_hex)
        except ChainRpcError as exc:
            text = str(exc).lower()
            if any(k in text for k in _ETH_KNOWN):
                return tx_hash
            if any(k in text for k in _ETH_LATER):
                raise
            raise BroadcastRejectedError(f"node refused {tx_hash}: {exc}") from None

    async def token_balance(self, token: str, owner: str) -> int:
        data = "0x70a08231" + bytes(12).hex() + owner[2:].lower()  # balanceOf(address), EIP-20
        return hex_int(await self.call("eth_call", [{"to": token, "data": data}, "latest"]), "balanceOf")
