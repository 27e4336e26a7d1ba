"""The local Ethereum test chain (`coffer chain eth`) over real HTTP JSON-RPC: web3 can send a
signed transaction and read it back; snapshot/revert and coffer_reorg make real reorgs; the
test ERC-20 emits Transfer logs found by eth_getLogs; safe/finalized tags lag latest."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account

from tests.chain_fixtures import EthChain
from watchers.testchains import erc20

USER_KEY = bytes.fromhex("4646464646464646464646464646464646464646464646464646464646464646")  # EIP-155 example key
OTHER = "0x3535353535353535353535353535353535353535"


@pytest.fixture
def w3(eth_chain: EthChain) -> Iterator[Any]:
    from web3 import Web3

    provider = Web3.HTTPProvider(eth_chain.url, request_kwargs={"timeout": 30})
    web3 = Web3(provider)
    yield web3
    session = getattr(provider, "_request_session_manager", None)
    cache = getattr(session, "session_cache", None)
    if cache is not None:
        for _, sess in list(cache.items()):
            sess.close()
        cache.clear()


def _send(eth_chain: EthChain, raw: bytes) -> str:
    return str(eth_chain.rpc("eth_sendRawTransaction", "0x" + raw.hex()))


def _signed_transfer(eth_chain: EthChain, key: bytes, to: str, value_wei: int, nonce: int) -> bytes:
    gas_price = int(eth_chain.rpc("eth_gasPrice"), 16)
    tx = {"type": 2, "chainId": int(eth_chain.rpc("eth_chainId"), 16), "nonce": nonce, "to": to,
          "value": value_wei, "gas": 21000, "maxFeePerGas": 2 * gas_price, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def test_web3_sends_signed_tx_and_reads_it_back_in_a_block(eth_chain: EthChain, w3: Any) -> None:
    user = Account.from_key(USER_KEY)
    eth_chain.fund(user.address, 5 * 10**18)
    assert w3.eth.get_balance(user.address) == 5 * 10**18
    assert w3.eth.chain_id == int(eth_chain.rpc("eth_chainId"), 16)
    nonce = w3.eth.get_transaction_count(user.address, "pending")
    fee = w3.eth.gas_price
    tx = {"type": 2, "chainId": w3.eth.chain_id, "nonce": nonce, "to": OTHER, "value": 10**17, "gas": 21000,
          "maxFeePerGas": 2 * fee, "maxPriorityFeePerGas": w3.eth.max_priority_fee}
    signed = Account.sign_transaction(tx, USER_KEY)
    txid = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(txid, timeout=30)
    assert receipt["status"] == 1
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert block["hash"] == receipt["blockHash"]
    found = [t for t in block["transactions"] if t["hash"] == txid]
    assert len(found) == 1
    assert found[0]["from"] == user.address and found[0]["to"] == OTHER and found[0]["value"] == 10**17
    by_hash = w3.eth.get_transaction(txid)
    assert by_hash["blockNumber"] == receipt["blockNumber"] and by_hash["input"] in (b"", "0x")
    assert w3.eth.get_block_number() >= receipt["blockNumber"]
    history = w3.eth.fee_history(2, "latest", [50])
    assert len(history["baseFeePerGas"]) == 3
    # A replay of the same signed transaction is refused (nonce already used).
    with pytest.raises(Exception, match=r"nonce too low|already known"):
        w3.eth.send_raw_transaction(signed.raw_transaction)


def test_snapshot_revert_changes_the_block_hash_at_a_height(eth_chain: EthChain) -> None:
    start = eth_chain.block_number()
    snap = eth_chain.snapshot()
    old = eth_chain.mine(3)
    height = start + 2
    old_block = eth_chain.rpc("eth_getBlockByNumber", hex(height), False)
    assert old_block["hash"] == old[1]
    assert eth_chain.revert(snap)
    assert eth_chain.block_number() == start
    assert eth_chain.rpc("eth_getBlockByNumber", hex(height), False) is None
    new = eth_chain.mine(4)
    new_block = eth_chain.rpc("eth_getBlockByNumber", hex(height), False)
    assert new_block["hash"] == new[1] != old_block["hash"]
    assert eth_chain.rpc("eth_getBlockByNumber", hex(height + 1), False)["parentHash"] == new_block["hash"]


def test_reorg_drops_or_remines_orphaned_transactions(eth_chain: EthChain) -> None:
    a = Account.create()
    b = Account.create()
    tx_a = eth_chain.fund(a.address, 10**18)
    tx_b = eth_chain.fund(b.address, 2 * 10**18)
    receipt_a = eth_chain.rpc("eth_getTransactionReceipt", tx_a)
    new_hashes = eth_chain.reorg(2, 3, drop_txids=[tx_b])
    assert len(new_hashes) == 3
    moved = eth_chain.rpc("eth_getTransactionReceipt", tx_a)
    assert moved is not None and moved["blockHash"] != receipt_a["blockHash"] and moved["blockHash"] in new_hashes
    assert eth_chain.rpc("eth_getTransactionReceipt", tx_b) is None
    assert int(eth_chain.rpc("eth_getBalance", b.address, "latest"), 16) == 0
    assert int(eth_chain.rpc("eth_getBalance", a.address, "latest"), 16) == 10**18


def test_erc20_transfer_emits_a_log_found_by_get_logs(eth_chain: EthChain) -> None:
    token = eth_chain.deploy_erc20()
    assert eth_chain.rpc("eth_getCode", token, "latest") not in ("0x", None)
    holder = Account.create()
    eth_chain.fund(holder.address, 10**18)
    eth_chain.mint_erc20(token, holder.address, 250_000_000)
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    fee = int(eth_chain.rpc("eth_gasPrice"), 16)
    nonce = int(eth_chain.rpc("eth_getTransactionCount", holder.address, "pending"), 16)
    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": token, "value": 0, "gas": 100_000,
          "maxFeePerGas": 2 * fee, "maxPriorityFeePerGas": 10**9, "data": erc20.transfer_data(OTHER, 1_500_000)}
    txid = _send(eth_chain, bytes(Account.sign_transaction(tx, holder.key).raw_transaction))
    receipt = eth_chain.rpc("eth_getTransactionReceipt", txid)
    assert int(receipt["status"], 16) == 1
    block = receipt["blockNumber"]
    recipient_topic = "0x" + "00" * 12 + OTHER[2:].lower()
    logs = eth_chain.rpc("eth_getLogs", {"fromBlock": block, "toBlock": block, "address": token,
                                         "topics": [erc20.TRANSFER_TOPIC, None, recipient_topic]})
    assert len(logs) == 1
    log = logs[0]
    assert log["transactionHash"] == txid and log["removed"] is False
    assert log["topics"][1] == "0x" + "00" * 12 + holder.address[2:].lower()
    assert int(log["data"], 16) == 1_500_000
    # A range reaching past the head ends at the head (as geth does), not in an error.
    beyond = eth_chain.rpc("eth_getLogs", {"fromBlock": block, "toBlock": hex(int(block, 16) + 100), "address": token})
    assert [x["transactionHash"] for x in beyond] == [txid]
    balance = eth_chain.rpc("eth_call", {"to": token, "data": "0x" + erc20.balance_of_data(OTHER).hex()}, "latest")
    assert int(balance, 16) == 1_500_000
    # The mint's Transfer (from the zero address) is there too, over the whole range.
    everything = eth_chain.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": token,
                                               "topics": [erc20.TRANSFER_TOPIC]})
    assert [int(x["data"], 16) for x in everything][-2:] == [250_000_000, 1_500_000]


def test_safe_and_finalized_tags_lag_latest(eth_chain: EthChain) -> None:
    eth_chain.mine(6)
    latest = eth_chain.block_number()
    safe = eth_chain.rpc("eth_getBlockByNumber", "safe", False)
    finalized = eth_chain.rpc("eth_getBlockByNumber", "finalized", False)
    assert int(safe["number"], 16) == latest - 2
    assert int(finalized["number"], 16) == latest - 4


def test_manual_mining_puts_two_txs_of_one_sender_in_one_block(eth_chain: EthChain) -> None:
    user = Account.create()
    eth_chain.fund(user.address, 10**18)
    eth_chain.set_auto_mine(False)
    try:
        before = eth_chain.block_number()
        first = _send(eth_chain, _signed_transfer(eth_chain, user.key, OTHER, 1, 0))
        second = _send(eth_chain, _signed_transfer(eth_chain, user.key, OTHER, 2, 1))
        assert eth_chain.block_number() == before
        assert eth_chain.rpc("eth_getTransactionReceipt", first) is None
        assert eth_chain.rpc("eth_getTransactionByHash", second)["blockHash"] is None
        assert int(eth_chain.rpc("eth_getTransactionCount", user.address, "pending"), 16) == 2
        assert int(eth_chain.rpc("eth_getTransactionCount", user.address, "latest"), 16) == 0
        with pytest.raises(RuntimeError, match="nonce gap"):
            _send(eth_chain, _signed_transfer(eth_chain, user.key, OTHER, 3, 5))
        (mined,) = eth_chain.mine(1)
        assert eth_chain.rpc("eth_getTransactionReceipt", first)["blockHash"] == mined
        assert eth_chain.rpc("eth_getTransactionReceipt", second)["blockHash"] == mined
    finally:
        eth_chain.set_auto_mine(True)


def test_garbage_and_wrong_chain_transactions_are_refused(eth_chain: EthChain) -> None:
    past_head = hex(eth_chain.block_number() + 1000)
    with pytest.raises(RuntimeError, match="header not found"):
        eth_chain.rpc("eth_getBalance", OTHER, past_head)
    assert eth_chain.rpc("eth_getBlockByNumber", past_head, False) is None
    with pytest.raises(RuntimeError, match="invalid signed transaction"):
        eth_chain.rpc("eth_sendRawTransaction", "0x02deadbeef")
    tx = {"type": 2, "chainId": 1, "nonce": 0, "to": OTHER, "value": 1, "gas": 21000,
          "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    with pytest.raises(RuntimeError, match="chain id"):
        _send(eth_chain, bytes(Account.sign_transaction(tx, USER_KEY).raw_transaction))
    poor = Account.create()
    with pytest.raises(RuntimeError, match="insufficient funds"):
        _send(eth_chain, _signed_transfer(eth_chain, poor.key, OTHER, 1, 0))


def test_injected_faults_answer_429_then_normal(eth_chain: EthChain) -> None:
    import httpx

    eth_chain.faults(2, status=429)
    body = {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}
    first = httpx.post(eth_chain.url, json=body, timeout=30)
    # Test controls are never faulted, and do not use up the injected count.
    assert eth_chain.mine(1)
    second = httpx.post(eth_chain.url, json=body, timeout=30)
    third = httpx.post(eth_chain.url, json=body, timeout=30)
    assert (first.status_code, second.status_code, third.status_code) == (429, 429, 200)
    assert third.json() == {"jsonrpc": "2.0", "id": 7, "result": hex(eth_chain.block_number())}
    eth_chain.faults(1, status=500)
    assert httpx.post(eth_chain.url, json=body, timeout=30).status_code == 500
    assert httpx.post(eth_chain.url, json=body, timeout=30).status_code == 200


def test_pending_tx_replaced_only_with_a_ten_percent_fee_bump(eth_chain: EthChain) -> None:
    user = Account.create()
    eth_chain.fund(user.address, 10**18)
    chain_id = int(eth_chain.rpc("eth_chainId"), 16)
    base = int(eth_chain.rpc("eth_gasPrice"), 16)

    def signed(tip_wei: int, value_wei: int) -> bytes:
        tx = {"type": 2, "chainId": chain_id, "nonce": 0, "to": OTHER, "value": value_wei, "gas": 21000,
              "maxFeePerGas": 3 * base + tip_wei, "maxPriorityFeePerGas": tip_wei}
        return bytes(Account.sign_transaction(tx, user.key).raw_transaction)

    eth_chain.set_auto_mine(False)
    try:
        original = _send(eth_chain, signed(10**9, 1))
        with pytest.raises(RuntimeError, match="replacement transaction underpriced"):
            _send(eth_chain, signed(10**9 + 10**7, 2))  # +1%: not enough
        replacement = _send(eth_chain, signed(2 * 10**9, 3))
        assert eth_chain.rpc("coffer_mempool") == [replacement]
        eth_chain.mine(1)
        assert eth_chain.rpc("eth_getTransactionReceipt", original) is None
        assert int(eth_chain.rpc("eth_getTransactionReceipt", replacement)["status"], 16) == 1
    finally:
        eth_chain.set_auto_mine(True)
