"""Ethereum signing: the EIP-155 example byte for byte; EIP-1559 and EIP-155 equal to eth-account's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from signer.eth_sign import keccak256, parse_eth_tx, rlp_encode, sign_eth_tx, to_checksum_address

VECTOR = json.loads((Path(__file__).parents[1] / "vectors" / "eip155_example.json").read_text())
PATH = "m/44'/60'/0'/0/0"


def test_eip155_example_byte_for_byte() -> None:
    tx = parse_eth_tx(json.dumps({**VECTOR["tx"], "derivation_path": PATH}))
    assert "0x" + tx.signing_payload().hex() == VECTOR["signing_data"]
    assert "0x" + keccak256(tx.signing_payload()).hex() == VECTOR["signing_hash"]
    signed = sign_eth_tx(tx, bytes.fromhex(VECTOR["private_key"][2:]))
    assert signed.raw_hex == VECTOR["signed_tx"]
    # the v, r, s the EIP lists
    vrs = b"".join(rlp_encode(x) for x in (VECTOR["v"], int(VECTOR["r"]), int(VECTOR["s"])))
    assert signed.raw.endswith(vrs)


def test_rlp_known_encodings() -> None:
    # Examples from the RLP section of the Ethereum wiki / yellow paper appendix B.
    assert rlp_encode(b"dog") == b"\x83dog"
    assert rlp_encode([b"cat", b"dog"]) == b"\xc8\x83cat\x83dog"
    assert rlp_encode(b"") == b"\x80"
    assert rlp_encode([]) == b"\xc0"
    assert rlp_encode(0) == b"\x80"
    assert rlp_encode(15) == b"\x0f"
    assert rlp_encode(1024) == b"\x82\x04\x00"
    assert rlp_encode([[], [[]], [[], [[]]]]) == bytes.fromhex("c7c0c1c0c3c0c1c0")
    lorem = b"Lorem ipsum dolor sit amet, consectetur adipisicing elit"
    assert rlp_encode(lorem) == b"\xb8\x38" + lorem


def test_eip55_checksum_examples() -> None:
    # Examples listed in EIP-55.
    for addr in ("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
                 "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB", "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb"):
        assert to_checksum_address(bytes.fromhex(addr[2:])) == addr


CASES: list[dict[str, Any]] = [
    {"type": 2, "chain_id": 1, "nonce": 0, "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "value": "0",
     "gas": 21000, "max_fee_per_gas": 1, "max_priority_fee_per_gas": 0, "data": "0x"},
    {"type": 2, "chain_id": 11155111, "nonce": 300, "to": "0xdbf03b407c01e7cd3cbea99509d93f8dddc8c6fb",
     "value": str(10**24), "gas": 65000, "max_fee_per_gas": str(90 * 10**9), "max_priority_fee_per_gas": 10**9,
     "data": "0xa9059cbb" + "00" * 12 + "11" * 20 + f"{123456789:064x}"},
    {"type": 2, "chain_id": 1337, "nonce": 2, "to": "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb", "value": 5,
     "gas": 50000, "max_fee_per_gas": 2 * 10**9, "max_priority_fee_per_gas": 10**9, "data": "0x",
     "access_list": [{"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                      "storage_keys": ["0x" + "00" * 31 + "01"]}]},
    {"type": 0, "chain_id": 61, "nonce": 1, "to": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "value": 10**18,
     "gas": 21000, "gas_price": str(3 * 10**9), "data": "0x00ff"},
]


def _eth_account_dict(case: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"chainId": case["chain_id"], "nonce": case["nonce"], "to": to_checksum_address(
        bytes.fromhex(case["to"][2:])), "value": int(case["value"]), "gas": case["gas"],
        "data": bytes.fromhex(case["data"][2:])}
    if case["type"] == 2:
        out.update(type=2, maxFeePerGas=int(case["max_fee_per_gas"]),
                   maxPriorityFeePerGas=int(case["max_priority_fee_per_gas"]))
        if "access_list" in case:
            out["accessList"] = [{"address": e["address"], "storageKeys": e["storage_keys"]}
                                 for e in case["access_list"]]
    else:
        out["gasPrice"] = int(case["gas_price"])
    return out


@pytest.mark.parametrize("case", CASES, ids=["1559-min", "1559-erc20", "1559-access-list", "155-legacy"])
@pytest.mark.parametrize("key_byte", [0x01, 0x46, 0xA7])
def test_signature_equals_eth_account(case: dict[str, Any], key_byte: int) -> None:
    from eth_account import Account

    key = bytes([key_byte]) * 32
    ours = sign_eth_tx(parse_eth_tx(json.dumps({**case, "derivation_path": PATH})), key, max_fee_wei=10**19)
    theirs = Account.sign_transaction(_eth_account_dict(case), key)
    assert ours.raw == bytes(theirs.raw_transaction)
    assert ours.tx_hash == "0x" + bytes(theirs.hash).hex()
    assert ours.from_address == Account.from_key(key).address


def test_selector_and_erc20_summary() -> None:
    assert keccak256(b"transfer(address,uint256)")[:4].hex() == "a9059cbb"
    data = "0xa9059cbb" + "00" * 12 + "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed" + f"{123456789:064x}"
    tx = parse_eth_tx(json.dumps({**CASES[0], "to": "0xdAC17F958D2ee523a2206206994597C13D831ec7", "data": data,
                                  "derivation_path": PATH}))
    text = "\n".join(tx.summary_lines("0x0000000000000000000000000000000000000000"))
    assert ("ERC-20 transfer on token 0xdAC17F958D2ee523a2206206994597C13D831ec7: 123456789 base units to "
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed") in text
