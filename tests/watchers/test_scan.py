"""Pure block scanning on plain Esplora / JSON-RPC data: ours found, unknown ignored, malformed refused."""

from __future__ import annotations

from typing import Any

import pytest

from watchers.errors import InconsistentAnswerError
from watchers.ethrpc import TRANSFER_TOPIC
from watchers.model import BlockHeader
from watchers.scan import scan_esplora_txs, scan_eth_block

BLOCK = "ab" * 32
HEADER = BlockHeader(7, BLOCK, "cd" * 32)
OURS = {"bcrt1qours0": 10, "bcrt1qours1": 11}


def tx(txid: str, outs: list[tuple[str | None, int]]) -> dict[str, Any]:
    vout = [({"scriptpubkey_address": a, "value": v} if a else {"scriptpubkey_type": "op_return", "value": v})
            for a, v in outs]
    return {"txid": txid, "vout": vout, "status": {"confirmed": True, "block_hash": BLOCK}}


def test_btc_outputs_to_registered_addresses_only() -> None:
    txs = [tx("11" * 32, [("bcrt1qother", 5), ("bcrt1qours0", 20_000)]),
           tx("22" * 32, [(None, 0), ("bcrt1qours1", 3), ("bcrt1qours0", 7)])]
    found, txids = scan_esplora_txs(txs, header=HEADER, network="regtest", asset="BTC", owner=OURS.get)
    assert txids == {"11" * 32, "22" * 32}
    assert [(o.deposit_key, o.user_id, o.amount_chain, o.output_index) for o in found] == [
        (f"btc:regtest:{'11' * 32}:1", 10, 20_000, 1),
        (f"btc:regtest:{'22' * 32}:1", 11, 3, 1),
        (f"btc:regtest:{'22' * 32}:2", 10, 7, 2),
    ]
    assert all(o.block_hash == BLOCK and o.block_height == 7 and o.asset == "BTC" for o in found)


@pytest.mark.parametrize("bad", [{"txid": "x"}, {"vout": []},
                                 {"txid": "33" * 32, "vout": [{"scriptpubkey_address": "bcrt1qours0"}]},
                                 {"txid": "33" * 32, "vout": [{"scriptpubkey_address": "bcrt1qours0", "value": 1.5}]}])
def test_btc_malformed_tx_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(InconsistentAnswerError):
        scan_esplora_txs([bad], header=HEADER, network="regtest", asset="BTC", owner=OURS.get)


USER_ADDR = "0x" + "aa" * 20
OTHER = "0x" + "bb" * 20
TOKEN = "0x" + "cc" * 20
EBLOCK = "0x" + "ee" * 32


def topic(addr: str) -> str:
    return "0x" + "00" * 12 + addr[2:]


def eth_block(txs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"number": "0x10", "hash": EBLOCK, "parentHash": "0x" + "dd" * 32, "transactions": txs}


def log(tx_hash: str, index: int, to: str, amount: int, *, contract: str = TOKEN, block: str = EBLOCK,
        removed: bool = False) -> dict[str, Any]:
    return {"address": contract, "blockHash": block, "transactionHash": tx_hash, "logIndex": hex(index),
            "removed": removed, "data": "0x" + amount.to_bytes(32, "big").hex(),
            "topics": [TRANSFER_TOPIC, topic(OTHER), topic(to)]}


def owner(address: str) -> int | None:
    return 5 if address.lower() == USER_ADDR else None


def test_eth_native_and_token_transfers() -> None:
    t1, t2, t3 = "0x" + "01" * 32, "0x" + "02" * 32, "0x" + "03" * 32
    block = eth_block([
        {"hash": t1, "to": USER_ADDR.upper().replace("0X", "0x"), "value": hex(3 * 10**18)},
        {"hash": t2, "to": TOKEN, "value": "0x0"},
        {"hash": t3, "to": None, "value": "0x0"},  # contract creation
    ])
    logs = [log(t2, 4, OTHER, 1), log(t2, 5, USER_ADDR, 2_500_000), log(t2, 6, USER_ADDR, 7),
            log(t2, 7, USER_ADDR, 9, contract="0x" + "99" * 20)]  # unconfigured token: ignored
    found, txids = scan_eth_block(block, logs, network="dev", native_asset="ETH", token_assets={TOKEN: "USDT"},
                                  owner=owner)
    assert txids == {t1, t2, t3}
    assert [(o.deposit_key, o.asset, o.amount_chain, o.output_index, o.user_id) for o in found] == [
        (f"eth:dev:{t1}:native", "ETH", 3 * 10**18, 0, 5),
        (f"eth:dev:{t2}:log1", "USDT", 2_500_000, 2, 5),
        (f"eth:dev:{t2}:log2", "USDT", 7, 3, 5),
    ]
    assert all(o.block_height == 16 and o.block_hash == EBLOCK for o in found)


@pytest.mark.parametrize("bad_log", [
    log("0x" + "02" * 32, 1, USER_ADDR, 1, block="0x" + "ff" * 32),  # from another block
    log("0x" + "02" * 32, 1, USER_ADDR, 1, removed=True),
    log("0x" + "09" * 32, 1, USER_ADDR, 1),  # tx not in the block
])
def test_eth_inconsistent_logs_are_refused(bad_log: dict[str, Any]) -> None:
    block = eth_block([{"hash": "0x" + "02" * 32, "to": TOKEN, "value": "0x0"}])
    with pytest.raises(InconsistentAnswerError):
        scan_eth_block(block, [bad_log], network="dev", native_asset="ETH", token_assets={TOKEN: "USDT"},
                       owner=owner)
