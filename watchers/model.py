"""Plain data of the scanning core: block headers, deposit observations and per-asset rules.

No I/O here; the clients produce these from node answers and the repository stores them.
Amounts are exact integers: `amount_chain` in the chain's smallest unit (satoshi, wei, token
base units), `amount_ledger` in the asset's ledger unit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BlockHeader:
    height: int
    block_hash: str
    parent_hash: str | None


@dataclass(frozen=True, slots=True)
class Observation:
    """One output / transfer paying a registered deposit address, as seen in one block.

    `deposit_key` identifies the payment across reorgs (it does not contain the block):
    `btc:<network>:<txid>:<vout>`; `eth:<network>:<txhash>:native` for the tx value;
    `eth:<network>:<txhash>:log<k>` for the k-th (0-based) Transfer log of a configured
    token contract inside that tx. `output_index` is the vout, 0 for native ETH and k+1 for
    the k-th token log, so it never collides within a tx.
    """

    deposit_key: str
    txid: str
    output_index: int
    address: str
    user_id: int
    asset: str
    amount_chain: int
    block_height: int
    block_hash: str


@dataclass(frozen=True, slots=True)
class AssetRule:
    """What the ledger's `assets` row says about crediting one asset."""

    code: str
    chain_decimals: int
    ledger_decimals: int
    token_contract: str | None
    required_confirmations: int
    min_deposit: int


@dataclass(frozen=True, slots=True)
class BlockScan:
    """Everything the daemon learned from one block."""

    header: BlockHeader
    observations: tuple[Observation, ...]
    txids: frozenset[str]
