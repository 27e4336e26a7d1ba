"""The local Ethereum test chain: eth-tester (py-evm) behind a JSON-RPC method table.

`EthTestChain.request(method, params)` answers one JSON-RPC call with a JSON-ready value
(quantities and bytes as 0x-hex, `Mapping`s as dicts). Reads go through web3's
`EthereumTesterProvider` request path (so field names and formats are web3's); writes and
mining are ours: raw transactions wait in our own mempool (so one block may hold several
transactions of one sender, which eth-tester's own manual mode cannot do) and are applied to
py-evm only when a block is mined. Block tags `safe` / `finalized` are `latest` minus
`safe_depth` / `finalized_depth`; `max_log_range` caps eth_getLogs ranges as hosted providers
do. Test-only methods: `evm_mine`, `evm_snapshot`, `evm_revert`, `coffer_reorg`,
`coffer_fund`, `coffer_deployErc20`, `coffer_mintErc20`, `coffer_setAutoMine`,
`coffer_mempool`. Everything is in memory; one lock serialises py-evm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchers.testchains.errors import RpcError

log = logging.getLogger(__name__)

# eth-tester's fixed chain id (web3's EthereumTesterProvider answers the same).
CHAIN_ID = 131277322940537
# eth-tester funds the accounts of private keys 1..10 with 1,000,000 ETH each; key 1 is our faucet.
FAUCET_KEY_INT = 1
DEFAULT_GAS_PRICE_WEI = 10**9
DEFAULT_PRIORITY_FEE_WEI = 10**9
BLOCK_TAGS = ("latest", "earliest", "pending", "safe", "finalized")
INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601


def to_rpc_json(value: Any, key: str = "") -> Any:
    """A web3/eth-tester value as JSON-RPC JSON: ints and bytes as 0x-hex, Mappings as dicts."""
    if value is None or isinstance(value, bool | float | str):
        return value
    if isinstance(value, int):
        if key == "logsBloom":  # eth-tester keeps the 2048-bit bloom as an int
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): to_rpc_json(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_rpc_json(v, key) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__} for JSON-RPC")


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def camelize(value: Any) -> Any:
    """eth-tester's snake_case objects (full transactions in blocks, logs) in JSON-RPC camelCase.

    A transaction's `data` is JSON-RPC's `input`; web3's AttributeDict becomes a plain dict.
    """
    if isinstance(value, Mapping):
        out = {_camel_key(str(k)): camelize(v) for k, v in value.items()}
        if "data" in out and "nonce" in out and "from" in out:
            out["input"] = out.pop("data")
        return out
    if isinstance(value, list | tuple):
        return [camelize(v) for v in value]
    return value


def parse_quantity(value: Any, what: str) -> int:
    """A JSON-RPC quantity (0x-hex string or int) as int; RpcError if malformed."""
    if isinstance(value, bool):
        raise RpcError(f"{what} must be a quantity", INVALID_PARAMS)
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.startswith(("0x", "0X")) else int(value)
        except ValueError:
            pass
    raise RpcError(f"{what} must be a quantity, got {value!r}", INVALID_PARAMS)


def parse_data(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(f"{what} must be 0x-prefixed hex data", INVALID_PARAMS)
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise RpcError(f"{what} is not valid hex", INVALID_PARAMS) from None


@dataclass(slots=True)
class _Pending:
    """A raw transaction waiting in our mempool, with what we decoded from it."""

    raw: bytes
    tx_hash: bytes
    sender: bytes
    nonce: int
    gas: int
    tip_cap_wei: int
    fee_cap_wei: int
    fields: dict[str, Any]


class EthTestChain:
    """One in-memory Ethereum chain. Thread-safe: every public method takes the lock."""

    def __init__(self, *, auto_mine: bool = True, safe_depth: int = 2, finalized_depth: int = 4,
                 max_log_range: int | None = None) -> None:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import Web3
        from web3.providers.eth_tester import EthereumTesterProvider

        if safe_depth < 0 or finalized_depth < safe_depth:
            raise RpcError("need 0 <= safe_depth <= finalized_depth", INVALID_PARAMS)
        self._lock = threading.RLock()
        self.tester = EthereumTester(PyEVMBackend(), auto_mine_transactions=False)
        provider = EthereumTesterProvider(self.tester)
        w3 = Web3(provider)
        self._web3_request = provider.request_func(w3, w3.middleware_onion)
        self.auto_mine = auto_mine
        self.safe_depth = safe_depth
        self.finalized_depth = finalized_depth
        self.max_log_range = max_log_range  # like hosted providers' eth_getLogs block-range cap
        self._mempool: list[_Pending] = []
        self._raw_by_hash: dict[bytes, bytes] = {}
        self._faucet_key = FAUCET_KEY_INT.to_bytes(32, "big")
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda p: CHAIN_ID,
            "net_version": lambda p: str(CHAIN_ID),
            "eth_blockNumber": lambda p: self._latest_number(),
            "eth_getBlockByNumber": self._get_block_by_number,
            "eth_getBlockByHash": lambda p: self._web3("eth_getBlockByHash", p),
            "eth_getTransactionByHash": self._get_transaction_by_hash,
            "eth_getTransactionReceipt": lambda p: self._web3("eth_getTransactionReceipt", p),
            "eth_getTransactionCount": self._get_transaction_count,
            "eth_getBalance": lambda p: self._web3("eth_getBalance", self._tag_at(p, 1)),
            "eth_getCode": lambda p: self._web3("eth_getCode", self._tag_at(p, 1)),
            "eth_call": lambda p: self._web3("eth_call", self._tag_at(p, 1)),
            "eth_estimateGas": lambda p: self._web3("eth_estimateGas", self._tag_at(p, 1)),
            "eth_gasPrice": lambda p: self._next_base_fee() + DEFAULT_PRIORITY_FEE_WEI,
            "eth_maxPriorityFeePerGas": lambda p: DEFAULT_PRIORITY_FEE_WEI,
            "eth_feeHistory": self._fee_history,
            "eth_sendRawTransaction": self._send_raw_transaction,
            "eth_getLogs": self._get_logs,
            "eth_accounts": lambda p: [],
            "web3_clientVersion": lambda p: "coffer-testchain/eth-tester",
            "evm_mine": self._evm_mine,
            "evm_snapshot": lambda p: self.tester.take_snapshot(),
            "evm_revert": self._evm_revert,
            "coffer_reorg": self._coffer_reorg,
            "coffer_fund": self._coffer_fund,
            "coffer_deployErc20": self._coffer_deploy_erc20,
            "coffer_mintErc20": self._coffer_mint_erc20,
            "coffer_setAutoMine": self._coffer_set_auto_mine,
            "coffer_mempool": lambda p: ["0x" + e.tx_hash.hex() for e in self._mempool],
        }

    # -- entry point -------------------------------------------------------------------------

    def request(self, method: str, params: Sequence[Any] | None) -> Any:
        """Answer one JSON-RPC call; raises RpcError for anything the caller got wrong."""
        fn = self._methods.get(method)
        if fn is None:
            raise RpcError(f"the method {method} does not exist/is not available", METHOD_NOT_FOUND)
        from eth_tester.exceptions import BlockNotFound

        with self._lock:
            try:
                result = fn(list(params or []))
            except BlockNotFound:
                raise RpcError("header not found") from None  # geth's answer for a block past the head
        return to_rpc_json(camelize(result))

    # -- helpers -----------------------------------------------------------------------------

    def _web3(self, method: str, params: list[Any]) -> Any:
        from eth_tester.exceptions import TransactionFailed, ValidationError
        from web3.exceptions import Web3Exception

        try:
            response = self._web3_request(method, params)
        except TransactionFailed as exc:
            raise RpcError(str(exc), 3) from None
        except (ValidationError, Web3Exception, ValueError, TypeError) as exc:
            raise RpcError(f"{method}: {exc}", INVALID_PARAMS) from None
        if "error" in response:
            error = response["error"]
            message = error.get("message", "error") if isinstance(error, Mapping) else str(error)
            raise RpcError(str(message))
        return response.get("result")

    def _latest_number(self) -> int:
        return int(self.tester.get_block_by_number("latest")["number"])

    def _resolve_tag(self, tag: Any) -> Any:
        """`safe` / `finalized` as a concrete hex number; other tags and numbers unchanged."""
        if tag == "safe":
            return hex(max(0, self._latest_number() - self.safe_depth))
        if tag == "finalized":
            return hex(max(0, self._latest_number() - self.finalized_depth))
        if tag is None:
            return "latest"
        if isinstance(tag, str) and tag not in BLOCK_TAGS:
            return hex(parse_quantity(tag, "block number"))
        if isinstance(tag, int) and not isinstance(tag, bool):
            return hex(tag)
        return tag

    def _tag_at(self, params: list[Any], index: int) -> list[Any]:
        if len(params) > index:
            params = list(params)
            params[index] = self._resolve_tag(params[index])
        return params

    def _next_base_fee(self) -> int:
        block = self.tester.get_block_by_number("latest")
        return _next_base_fee(int(block["base_fee_per_gas"]), int(block["gas_used"]), int(block["gas_limit"]))

    # -- reads -------------------------------------------------------------------------------

    def _get_block_by_number(self, params: list[Any]) -> Any:
        if not params:
            raise RpcError("eth_getBlockByNumber needs a block number or tag", INVALID_PARAMS)
        tag = self._resolve_tag(params[0])
        full = bool(params[1]) if len(params) > 1 else False
        if tag == "pending":
            tag = "latest"  # our pending block is not built until mining
        return self._web3("eth_getBlockByNumber", [tag, full])

    def _get_transaction_by_hash(self, params: list[Any]) -> Any:
        if not params:
            raise RpcError("eth_getTransactionByHash needs a hash", INVALID_PARAMS)
        tx_hash = parse_data(params[0], "transaction hash")
        for entry in self._mempool:
            if entry.tx_hash == tx_hash:
                return entry.fields
        return self._web3("eth_getTransactionByHash", [params[0]])

    def _get_transaction_count(self, params: list[Any]) -> Any:
        if not params:
            raise RpcError("eth_getTransactionCount needs an address", INVALID_PARAMS)
        tag = params[1] if len(params) > 1 else "latest"
        if tag == "pending":
            address = parse_data(params[0], "address")
            return self._state_nonce(address) + sum(1 for e in self._mempool if e.sender == address)
        return self._web3("eth_getTransactionCount", [params[0], self._resolve_tag(tag)])

    def _get_logs(self, params: list[Any]) -> Any:
        from eth_tester.exceptions import ValidationError

        if not params or not isinstance(params[0], Mapping):
            raise RpcError("eth_getLogs needs a filter object", INVALID_PARAMS)
        flt = dict(params[0])
        latest = self._latest_number()
        if "blockHash" in flt:
            block = self._web3("eth_getBlockByHash", [flt["blockHash"], False])
            if block is None:
                raise RpcError("unknown block hash")
            from_block = to_block = int(block["number"])
        else:
            from_block = self._block_number(flt.get("fromBlock"), latest)
            to_block = self._block_number(flt.get("toBlock"), latest)
        if self.max_log_range is not None and to_block - from_block + 1 > self.max_log_range:
            raise RpcError(f"eth_getLogs is limited to a {self.max_log_range} block range", -32005)
        to_block = min(to_block, latest)  # a range reaching past the head ends at the head, as geth does
        if from_block > to_block:
            return []
        address = flt.get("address")
        if isinstance(address, str):
            address = address.lower()
        elif isinstance(address, list):
            address = [str(a).lower() for a in address]
        topics = flt.get("topics")
        try:
            logs = self.tester.get_logs(from_block=from_block, to_block=to_block, address=address, topics=topics)
        except ValidationError as exc:
            raise RpcError(f"eth_getLogs: {exc}", INVALID_PARAMS) from None
        return [{**{k: v for k, v in entry.items() if k != "type"}, "removed": False} for entry in logs]

    def _block_number(self, tag: Any, latest: int) -> int:
        resolved = self._resolve_tag(tag)
        if resolved in ("latest", "pending"):
            return latest
        if resolved == "earliest":
            return 0
        return parse_quantity(resolved, "block number")

    def _fee_history(self, params: list[Any]) -> Any:
        if len(params) < 2:
            raise RpcError("eth_feeHistory needs blockCount and newestBlock", INVALID_PARAMS)
        count = max(1, min(1024, parse_quantity(params[0], "blockCount")))
        newest_tag = self._resolve_tag(params[1])
        newest = min(self._latest_number(), self._block_number(newest_tag, self._latest_number()))
        percentiles = [float(p) for p in (params[2] if len(params) > 2 and params[2] else [])]
        oldest = max(0, newest - count + 1)
        base_fees: list[int] = []
        ratios: list[float] = []
        rewards: list[list[int]] = []
        block: Any = None
        for number in range(oldest, newest + 1):
            block = self.tester.get_block_by_number(number, full_transactions=True)
            base_fee = int(block["base_fee_per_gas"])
            base_fees.append(base_fee)
            ratios.append(int(block["gas_used"]) / int(block["gas_limit"]))
            tips = sorted(_effective_tip(tx, base_fee) for tx in block["transactions"])
            rewards.append([tips[min(len(tips) - 1, int(len(tips) * p / 100))] if tips else 0 for p in percentiles])
        if block is not None:
            base_fees.append(_next_base_fee(int(block["base_fee_per_gas"]), int(block["gas_used"]),
                                            int(block["gas_limit"])))
        history: dict[str, Any] = {"oldestBlock": oldest, "baseFeePerGas": base_fees, "gasUsedRatio": ratios}
        if percentiles:
            history["reward"] = rewards
        return history

    # -- writes ------------------------------------------------------------------------------

    def _state_nonce(self, address: bytes) -> int:
        return int(self.tester.get_nonce("0x" + address.hex()))

    def _send_raw_transaction(self, params: list[Any]) -> Any:
        if not params:
            raise RpcError("eth_sendRawTransaction needs the signed transaction", INVALID_PARAMS)
        return self.send_raw(parse_data(params[0], "signed transaction"))

    def send_raw(self, raw: bytes) -> str:
        """Validate a signed transaction, put it in the mempool; mine it now when auto-mining."""
        entry = self._decode(raw)
        if entry.tx_hash in self._raw_by_hash and self._is_mined(entry.tx_hash):
            raise RpcError("already known")
        expected = self._state_nonce(entry.sender)
        if entry.nonce < expected:
            raise RpcError(f"nonce too low: next nonce {expected}, tx nonce {entry.nonce}")
        same = [e for e in self._mempool if e.sender == entry.sender and e.nonce == entry.nonce]
        if same:
            old = same[0]
            if old.tx_hash == entry.tx_hash:
                raise RpcError("already known")
            if entry.tip_cap_wei * 10 < old.tip_cap_wei * 11 or entry.fee_cap_wei * 10 < old.fee_cap_wei * 11:
                raise RpcError("replacement transaction underpriced")
            self._mempool.remove(old)
        else:
            pending = sum(1 for e in self._mempool if e.sender == entry.sender)
            if entry.nonce != expected + pending:
                raise RpcError(f"nonce gap: next nonce {expected + pending}, tx nonce {entry.nonce}")
        balance = int(self.tester.get_balance("0x" + entry.sender.hex()))
        cost = entry.gas * entry.fee_cap_wei + int(entry.fields["value"])
        if balance < cost:
            raise RpcError(f"insufficient funds for gas * price + value: have {balance} want {cost}")
        if entry.fee_cap_wei < self._next_base_fee():
            raise RpcError("max fee per gas less than block base fee")
        self._mempool.append(entry)
        self._raw_by_hash[entry.tx_hash] = raw
        if self.auto_mine:
            self.mine(1)
        return "0x" + entry.tx_hash.hex()

    def _is_mined(self, tx_hash: bytes) -> bool:
        from eth_tester.exceptions import TransactionNotFound

        try:
            receipt = self.tester.get_transaction_receipt("0x" + tx_hash.hex())
        except TransactionNotFound:
            return False
        return receipt.get("block_number") is not None

    def _decode(self, raw: bytes) -> _Pending:
        vm = self.tester.backend.chain.get_vm()
        try:
            tx = vm.get_transaction_builder().decode(raw)
            tx.check_signature_validity()
            sender = bytes(tx.sender)
        except Exception as exc:  # py-evm raises several rlp/validation types for garbage
            raise RpcError(f"invalid signed transaction: {exc}", INVALID_PARAMS) from None
        chain_id = getattr(tx, "chain_id", None)
        if chain_id is not None and chain_id != CHAIN_ID:
            raise RpcError(f"invalid chain id {chain_id}, this chain is {CHAIN_ID}")
        type_id = getattr(tx, "type_id", None)
        if type_id is None:
            tip_cap = fee_cap = int(tx.gas_price)
        else:
            tip_cap, fee_cap = int(tx.max_priority_fee_per_gas), int(tx.max_fee_per_gas)
        to = bytes(tx.to)
        fields: dict[str, Any] = {
            "hash": bytes(tx.hash), "nonce": int(tx.nonce), "from": _checksum(sender),
            "to": _checksum(to) if to else None, "value": int(tx.value), "gas": int(tx.gas),
            "input": bytes(tx.data), "type": int(type_id or 0), "chainId": chain_id or CHAIN_ID,
            "blockHash": None, "blockNumber": None, "transactionIndex": None,
            "r": int(tx.r), "s": int(tx.s),
        }
        if type_id is None:
            fields["gasPrice"] = fee_cap
            fields["v"] = int(tx.v)
        else:
            fields["maxFeePerGas"], fields["maxPriorityFeePerGas"] = fee_cap, tip_cap
            fields["yParity"] = fields["v"] = int(tx.y_parity)
        return _Pending(raw, bytes(tx.hash), sender, int(tx.nonce), int(tx.gas), tip_cap, fee_cap, fields)

    def mine(self, blocks: int = 1) -> list[str]:
        """Mine `blocks` blocks; the first takes the mempool in arrival order (gas limit permitting)."""
        if blocks < 1:
            raise RpcError("evm_mine: need at least one block", INVALID_PARAMS)
        with self._lock:
            backend = self.tester.backend
            gas_left = int(backend.chain.header.gas_limit)
            keep: list[_Pending] = []
            for entry in self._mempool:
                if entry.gas > gas_left:
                    keep.append(entry)
                    continue
                try:
                    backend.send_raw_transaction(entry.raw)
                except Exception as exc:  # invalid by now (e.g. balance spent): dropped, as a node would
                    log.warning("test chain dropped tx 0x%s: %s", entry.tx_hash.hex(), exc)
                    continue
                gas_left -= entry.gas
            self._mempool = keep
            return [str(h) for h in self.tester.mine_blocks(blocks)]

    def _evm_mine(self, params: list[Any]) -> Any:
        blocks = parse_quantity(params[0], "block count") if params and params[0] is not None else 1
        return self.mine(blocks)

    def _evm_revert(self, params: list[Any]) -> Any:
        from eth_tester.exceptions import SnapshotNotFound

        if not params:
            raise RpcError("evm_revert needs a snapshot id", INVALID_PARAMS)
        try:
            self.tester.revert_to_snapshot(parse_quantity(params[0], "snapshot id"))
        except SnapshotNotFound as exc:
            raise RpcError(str(exc)) from None
        return True

    def _coffer_reorg(self, params: list[Any]) -> Any:
        """coffer_reorg(depth, newBlocks, dropTxids=[]): replace the last `depth` blocks.

        The transactions of the orphaned blocks go back to the mempool (as on a real node) unless
        listed in dropTxids; the first new block takes the mempool. Returns the new hashes.
        """
        if len(params) < 2:
            raise RpcError("coffer_reorg needs depth and newBlocks", INVALID_PARAMS)
        depth = parse_quantity(params[0], "depth")
        new_blocks = parse_quantity(params[1], "newBlocks")
        drop = {parse_data(h, "txid") for h in (params[2] if len(params) > 2 and params[2] else [])}
        latest = self._latest_number()
        if depth < 1 or depth > latest:
            raise RpcError(f"reorg depth must be in 1..{latest}", INVALID_PARAMS)
        if new_blocks < 1:
            raise RpcError("a reorg must mine at least one new block", INVALID_PARAMS)
        orphaned: list[bytes] = []
        for number in range(latest - depth + 1, latest + 1):
            block = self.tester.get_block_by_number(number)
            orphaned.extend(parse_data(h, "txid") for h in block["transactions"])
        fork = self.tester.get_block_by_number(latest - depth)
        self.tester.backend.revert_to_snapshot(parse_data(fork["hash"], "hash"))
        old_pool = self._mempool
        self._mempool = []
        for tx_hash in orphaned:
            if tx_hash not in drop and tx_hash in self._raw_by_hash:
                self._mempool.append(self._decode(self._raw_by_hash[tx_hash]))
        self._mempool.extend(e for e in old_pool if e.tx_hash not in drop)
        return self.mine(new_blocks)

    def _coffer_set_auto_mine(self, params: list[Any]) -> Any:
        if not params or not isinstance(params[0], bool):
            raise RpcError("coffer_setAutoMine needs true or false", INVALID_PARAMS)
        self.auto_mine = params[0]
        return self.auto_mine

    # -- faucet and token (real signed transactions from the faucet key) ---------------------

    def faucet_address(self) -> str:
        from eth_account import Account

        return str(Account.from_key(self._faucet_key).address)

    def _sign_and_send(self, to: str | None, value_wei: int, data: bytes, gas: int) -> str:
        from eth_account import Account

        sender = parse_data(self.faucet_address(), "address")
        nonce = self._state_nonce(sender) + sum(1 for e in self._mempool if e.sender == sender)
        fee_cap = 2 * self._next_base_fee() + DEFAULT_PRIORITY_FEE_WEI
        tx: dict[str, Any] = {
            "type": 2, "chainId": CHAIN_ID, "nonce": nonce, "value": value_wei, "gas": gas, "data": data,
            "maxFeePerGas": fee_cap, "maxPriorityFeePerGas": DEFAULT_PRIORITY_FEE_WEI,
        }
        if to is not None:
            tx["to"] = _checksum(parse_data(to, "address"))
        signed = Account.sign_transaction(tx, self._faucet_key)
        return self.send_raw(bytes(signed.raw_transaction))

    def _coffer_fund(self, params: list[Any]) -> Any:
        """coffer_fund(address, amountWei): a signed transfer from the faucet; returns the txid."""
        if len(params) < 2:
            raise RpcError("coffer_fund needs address and amount_wei", INVALID_PARAMS)
        address = params[0]
        if len(parse_data(address, "address")) != 20:
            raise RpcError("coffer_fund: address must be 20 bytes", INVALID_PARAMS)
        amount_wei = parse_quantity(params[1], "amount_wei")
        if amount_wei <= 0:
            raise RpcError("coffer_fund: amount_wei must be positive", INVALID_PARAMS)
        return self._sign_and_send(address, amount_wei, b"", 21000)

    def _coffer_deploy_erc20(self, params: list[Any]) -> Any:
        """coffer_deployErc20(name, symbol): deploys the test token; returns the creation txid."""
        from watchers.testchains import erc20

        name = str(params[0]) if params else "Tether USD (test)"
        symbol = str(params[1]) if len(params) > 1 else "USDT"
        return self._sign_and_send(None, 0, erc20.deploy_data(name, symbol), 2_000_000)

    def _coffer_mint_erc20(self, params: list[Any]) -> Any:
        """coffer_mintErc20(token, to, amount): the faucet (the deployer) mints; returns the txid."""
        from watchers.testchains import erc20

        if len(params) < 3:
            raise RpcError("coffer_mintErc20 needs token, to and amount", INVALID_PARAMS)
        token = params[0]
        to = parse_data(params[1], "to")
        amount = parse_quantity(params[2], "amount")
        return self._sign_and_send(token, 0, erc20.mint_data(to, amount), 120_000)


def _checksum(address: bytes) -> str:
    from eth_utils.address import to_checksum_address

    return str(to_checksum_address(address))


def _effective_tip(tx: Mapping[str, Any], base_fee: int) -> int:
    if tx.get("max_fee_per_gas") is not None:
        return min(int(tx["max_priority_fee_per_gas"]), int(tx["max_fee_per_gas"]) - base_fee)
    return int(tx.get("gas_price", base_fee)) - base_fee


def _next_base_fee(base_fee: int, gas_used: int, gas_limit: int) -> int:
    """EIP-1559 base fee of the next block (elasticity 2, max change 1/8)."""
    target = gas_limit // 2
    if gas_used == target or target == 0:
        return base_fee
    if gas_used > target:
        return base_fee + max(1, base_fee * (gas_used - target) // target // 8)
    return max(0, base_fee - base_fee * (target - gas_used) // target // 8)
