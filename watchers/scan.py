"""Pure block scanning: find the outputs and token transfers that pay registered deposit addresses.

Input is what a node served (Esplora tx JSON for Bitcoin; an Ethereum block with full
transactions plus the `Transfer` logs of configured token contracts), already parsed, and an
`owner(address) -> user id | None` lookup (the wallet's address book, or a plain dict's
`get` in the benchmark). Output is one `Observation` per payment. Outputs to unknown
addresses are ignored. Malformed data raises `InconsistentAnswerError`: the daemon retries
the block, it never credits from a half-understood answer. This loop is the watcher's hot
path (a 4,000-output block against a million addresses), so it stays a flat loop over
dicts with one hash lookup per output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from watchers.errors import InconsistentAnswerError
from watchers.ethrpc import TRANSFER_TOPIC, hex_int, topic_address
from watchers.model import BlockHeader, Observation

Owner = Callable[[str], int | None]


def scan_esplora_txs(
    txs: Sequence[Mapping[str, Any]],
    *,
    header: BlockHeader,
    network: str,
    asset: str,
    owner: Owner,
) -> tuple[list[Observation], frozenset[str]]:
    """Observations paying registered addresses in a block's Esplora txs, and all txids seen."""
    found: list[Observation] = []
    txids: set[str] = set()
    block_hash = header.block_hash
    height = header.height
    for tx in txs:
        txid = tx.get("txid")
        vouts = tx.get("vout")
        if not isinstance(txid, str) or not isinstance(vouts, list):
            raise InconsistentAnswerError(f"block {block_hash}: malformed tx")
        txids.add(txid)
        for index, out in enumerate(vouts):
            address = out.get("scriptpubkey_address")
            if address is None:
                continue  # OP_RETURN, bare multisig, ...: no address, never ours
            user_id = owner(address)
            if user_id is None:
                continue
            value = out.get("value")
            if type(value) is not int or value < 0:
                raise InconsistentAnswerError(f"tx {txid}: output {index} has no integer value")
            found.append(Observation(
                deposit_key=f"btc:{network}:{txid}:{index}", txid=txid, output_index=index,
                address=address, user_id=user_id, asset=asset, amount_chain=value,
                block_height=height, block_hash=block_hash,
            ))
    return found, frozenset(txids)


def eth_header(block: Mapping[str, Any]) -> BlockHeader:
    """The header of an `eth_getBlockByNumber` answer."""
    block_hash = block.get("hash")
    parent = block.get("parentHash")
    if not isinstance(block_hash, str) or not isinstance(parent, str):
        raise InconsistentAnswerError("eth block without hash/parentHash")
    return BlockHeader(hex_int(block.get("number"), "block number"), block_hash.lower(), parent.lower())


def scan_eth_block(
    block: Mapping[str, Any],
    logs: Sequence[Mapping[str, Any]],
    *,
    network: str,
    native_asset: str | None,
    token_assets: Mapping[str, str],
    owner: Owner,
) -> tuple[list[Observation], frozenset[str]]:
    """Native ETH payments (tx `value` to a registered address) and ERC-20 Transfer logs.

    `token_assets` maps lowercase token contract -> asset code. Native value moved by
    contracts (internal transactions) is not seen here. Every log must belong to this block
    and must not be `removed`, else InconsistentAnswerError. The caller checks the receipts
    of native payments (status 1) before recording them.
    """
    header = eth_header(block)
    found: list[Observation] = []
    txids: set[str] = set()
    for tx in block.get("transactions", ()):
        if not isinstance(tx, Mapping):
            raise InconsistentAnswerError(f"block {header.block_hash}: transactions are not objects")
        tx_hash = str(tx.get("hash", "")).lower()
        if not tx_hash.startswith("0x"):
            raise InconsistentAnswerError(f"block {header.block_hash}: tx without hash")
        txids.add(tx_hash)
        to = tx.get("to")
        if native_asset is None or not isinstance(to, str):
            continue  # contract creation, or no native asset configured
        user_id = owner(to)
        if user_id is None:
            continue
        value_wei = hex_int(tx.get("value"), f"tx {tx_hash} value")
        if value_wei == 0:
            continue
        found.append(Observation(
            deposit_key=f"eth:{network}:{tx_hash}:native", txid=tx_hash, output_index=0,
            address=to, user_id=user_id, asset=native_asset, amount_chain=value_wei,
            block_height=header.height, block_hash=header.block_hash,
        ))
    ordinals: dict[str, int] = {}
    for entry in sorted(logs, key=lambda e: hex_int(e.get("logIndex"), "logIndex")):
        if entry.get("removed"):
            raise InconsistentAnswerError(f"block {header.block_hash}: node served a removed log")
        if str(entry.get("blockHash", "")).lower() != header.block_hash:
            raise InconsistentAnswerError(f"block {header.block_hash}: log from another block")
        contract = str(entry.get("address", "")).lower()
        asset = token_assets.get(contract)
        topics = entry.get("topics")
        if asset is None or not isinstance(topics, list) or len(topics) != 3:
            continue  # not a configured token, or not an ERC-20 Transfer (ERC-721 has 4 topics)
        if str(topics[0]).lower() != TRANSFER_TOPIC:
            continue
        tx_hash = str(entry.get("transactionHash", "")).lower()
        if tx_hash not in txids:
            raise InconsistentAnswerError(f"block {header.block_hash}: log of tx {tx_hash} not in the block")
        ordinal = ordinals.get(tx_hash, 0)
        ordinals[tx_hash] = ordinal + 1
        to = topic_address(str(topics[2]))
        user_id = owner(to)
        if user_id is None:
            continue
        amount = hex_int(entry.get("data") if entry.get("data") not in ("0x", None) else "0x0", "Transfer amount")
        found.append(Observation(
            deposit_key=f"eth:{network}:{tx_hash}:log{ordinal}", txid=tx_hash, output_index=ordinal + 1,
            address=to, user_id=user_id, asset=asset, amount_chain=amount,
            block_height=header.height, block_hash=header.block_hash,
        ))
    return found, frozenset(txids)
