"""One small interface per chain for the daemon: tip, hash at a height, header, block scan.

`BtcSource` reads an Esplora host, `EthSource` an Ethereum JSON-RPC node. Both check that
the answers hang together (the block served at a height has that height; every tx and log
belongs to the block asked for; a native ETH payment's receipt succeeded in that block)
and raise `InconsistentAnswerError` otherwise, so the daemon retries instead of crediting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from watchers.errors import InconsistentAnswerError, WatcherConfigError
from watchers.esplora import EsploraClient
from watchers.ethrpc import EthRpcClient, hex_int
from watchers.model import AssetRule, BlockHeader, BlockScan
from watchers.scan import Owner, eth_header, scan_esplora_txs, scan_eth_block


class ChainSource(Protocol):
    chain: str

    async def tip_height(self) -> int: ...

    async def hash_at(self, height: int) -> str: ...

    async def header_at(self, height: int) -> BlockHeader: ...

    async def scan(self, header: BlockHeader, owner: Owner) -> BlockScan: ...

    async def finalized_height(self) -> int | None: ...

    def update_assets(self, assets: Mapping[str, AssetRule]) -> None: ...

    async def locate_tx(self, txid: str) -> tuple[int, str] | None:
        """(height, block hash) of the block holding `txid`, or None if not mined (or unknown)."""

    async def aclose(self) -> None: ...


def native_asset(assets: Mapping[str, AssetRule], chain: str) -> str | None:
    """The chain's own coin among `assets`: no token contract; named like the chain if several are."""
    natives = sorted(a.code for a in assets.values() if a.token_contract is None)
    if len(natives) <= 1:
        return natives[0] if natives else None
    if chain.upper() in natives:
        return chain.upper()
    raise WatcherConfigError(f"several {chain} assets without a token contract ({', '.join(natives)}): "
                             "cannot tell which is the native coin")


class BtcSource:
    chain = "btc"

    def __init__(self, client: EsploraClient, *, network: str, assets: Mapping[str, AssetRule]) -> None:
        native = native_asset(assets, "btc")
        if native is None:
            raise WatcherConfigError(f"no BTC asset on network {network!r} in the ledger's assets table")
        self._client = client
        self._network = network
        self._asset = native
        self._tx_counts: dict[str, int] = {}

    async def tip_height(self) -> int:
        return await self._client.tip_height()

    async def hash_at(self, height: int) -> str:
        return await self._client.block_hash_at(height)

    async def header_at(self, height: int) -> BlockHeader:
        block_hash = await self._client.block_hash_at(height)
        block = await self._client.block(block_hash)
        if block["height"] != height:
            raise InconsistentAnswerError(f"block {block_hash} served for height {height} says {block['height']}")
        if len(self._tx_counts) > 64:
            self._tx_counts.clear()
        self._tx_counts[block_hash] = int(block["tx_count"])
        return BlockHeader(height, block_hash, block.get("previousblockhash"))

    async def scan(self, header: BlockHeader, owner: Owner) -> BlockScan:
        tx_count = self._tx_counts.get(header.block_hash)
        if tx_count is None:
            tx_count = int((await self._client.block(header.block_hash))["tx_count"])
        txs = await self._client.block_txs(header.block_hash, tx_count)
        found, txids = scan_esplora_txs(txs, header=header, network=self._network, asset=self._asset, owner=owner)
        return BlockScan(header, tuple(found), txids)

    async def finalized_height(self) -> int | None:
        return None

    def update_assets(self, assets: Mapping[str, AssetRule]) -> None:
        native = native_asset(assets, "btc")
        if native is not None:
            self._asset = native

    async def locate_tx(self, txid: str) -> tuple[int, str] | None:
        status = await self._client.tx_status(txid)
        if status is None or not status.get("confirmed"):
            return None
        height, block_hash = status.get("block_height"), status.get("block_hash")
        if not isinstance(height, int) or not isinstance(block_hash, str):
            raise InconsistentAnswerError(f"GET /tx/{txid}/status: confirmed without a block")
        return height, block_hash

    async def aclose(self) -> None:
        await self._client.aclose()


class EthSource:
    chain = "eth"

    def __init__(self, client: EthRpcClient, *, network: str, assets: Mapping[str, AssetRule],
                 use_finalized: bool = False) -> None:
        self._native: str | None = None
        self._tokens: dict[str, str] = {}
        self.update_assets(assets)
        self._client = client
        self._network = network
        self._use_finalized = use_finalized
        self._blocks: dict[str, dict[str, Any]] = {}

    async def tip_height(self) -> int:
        return await self._client.block_number()

    async def hash_at(self, height: int) -> str:
        block = await self._client.get_block(height, full_transactions=False)
        if block is None:
            raise InconsistentAnswerError(f"no block at height {height}")
        return str(block["hash"]).lower()

    async def header_at(self, height: int) -> BlockHeader:
        block = await self._client.get_block(height, full_transactions=True)
        if block is None:
            raise InconsistentAnswerError(f"no block at height {height}")
        header = eth_header(block)
        if header.height != height:
            raise InconsistentAnswerError(f"block served for height {height} says {header.height}")
        if len(self._blocks) > 16:
            self._blocks.clear()
        self._blocks[header.block_hash] = block
        return header

    async def scan(self, header: BlockHeader, owner: Owner) -> BlockScan:
        block = self._blocks.pop(header.block_hash, None)
        if block is None:
            fresh = await self.header_at(header.height)
            if fresh != header:
                raise InconsistentAnswerError(f"block at {header.height} changed while scanning")
            block = self._blocks.pop(header.block_hash)
        logs = await self._client.transfer_logs(header.height, header.height, list(self._tokens))
        found, txids = scan_eth_block(block, logs, network=self._network, native_asset=self._native,
                                      token_assets=self._tokens, owner=owner)
        for obs in found:
            if obs.deposit_key.endswith(":native"):
                receipt = await self._client.get_receipt(obs.txid)
                if receipt is None or str(receipt.get("blockHash", "")).lower() != header.block_hash:
                    raise InconsistentAnswerError(f"receipt of {obs.txid} missing or from another block")
                if hex_int(receipt.get("status"), "receipt status") != 1:
                    found = [o for o in found if o is not obs]  # a failed tx moved no value
        return BlockScan(header, tuple(found), txids)

    async def finalized_height(self) -> int | None:
        if not self._use_finalized:
            return None
        # A node that does not know the tag: fall back to counting confirmations.
        return await self._client.tag_height("finalized")

    def update_assets(self, assets: Mapping[str, AssetRule]) -> None:
        """Take the ledger's current asset rows (e.g. a token contract configured after start).

        A token whose contract is not configured yet is skipped (never mistaken for ETH).
        """
        self._native = native_asset(assets, "eth")
        self._tokens = {a.token_contract: a.code for a in assets.values() if a.token_contract}

    async def locate_tx(self, txid: str) -> tuple[int, str] | None:
        receipt = await self._client.get_receipt(txid)
        if receipt is None or receipt.get("blockHash") is None:
            return None
        return hex_int(receipt.get("blockNumber"), "receipt blockNumber"), str(receipt["blockHash"]).lower()

    async def aclose(self) -> None:
        await self._client.aclose()
