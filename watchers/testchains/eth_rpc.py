"""The Ethereum test chain's JSON-RPC server over HTTP on 127.0.0.1 (`coffer chain eth`).

POST / with a JSON-RPC 2.0 request or batch; answers per JSON-RPC (errors as `error` objects
with HTTP 200, as geth does). `EthRpcServer` wraps an `EthTestChain` and optionally mines a
block every `block_time_s` seconds in a background thread (empty blocks included, so block
numbers advance like a live chain). GET / answers a short liveness text. Fault injection:
`coffer_injectFaults(count, status, delayMs)` makes the next `count` requests wait `delayMs`
and then answer HTTP `status` (429, 500, ...; null: the normal answer); requests whose methods
start with `coffer_` or `evm_` (the test controls) are never faulted.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from watchers.testchains._http import ChainHTTPServer, FaultInjector, PeriodicMiner, Reply
from watchers.testchains.errors import RpcError
from watchers.testchains.eth_chain import EthTestChain

log = logging.getLogger(__name__)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class EthRpcServer:
    """An `EthTestChain` served as JSON-RPC over HTTP; `url` is known once constructed."""

    def __init__(self, chain: EthTestChain, host: str = "127.0.0.1", port: int = 0,
                 block_time_s: float | None = None) -> None:
        self.chain = chain
        self._http = ChainHTTPServer(self.handle, host, port)
        self._block_time_s = block_time_s
        self._miner: PeriodicMiner | None = None
        self._faults = FaultInjector({429: b"Too Many Requests"})

    @property
    def url(self) -> str:
        return self._http.url

    def handle(self, method: str, path: str, body: bytes) -> Reply:
        if method == "GET":
            return Reply(200, b"coffer eth test chain: POST JSON-RPC here\n")
        try:
            payload = json.loads(body or b"null")
        except ValueError:
            return self._json(_error(None, PARSE_ERROR, "parse error: body is not JSON"))
        items = payload if isinstance(payload, list) else [payload]
        is_control = all(isinstance(i, dict) and str(i.get("method", "")).startswith(("coffer_", "evm_"))
                         for i in items)
        if items and is_control and any(i.get("method") == "coffer_injectFaults" for i in items):
            return self._json([self._inject(i) for i in items] if isinstance(payload, list) else self._inject(payload))
        if not is_control:
            fault = self._faults.take()
            if fault is not None:
                return fault
        if isinstance(payload, list):
            if not payload:
                return self._json(_error(None, INVALID_REQUEST, "empty batch"))
            return self._json([self._one(item) for item in payload])
        return self._json(self._one(payload))

    def _one(self, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return _error(None, INVALID_REQUEST, "invalid request: need an object with a method")
        request_id = item.get("id")
        params = item.get("params") or []
        if not isinstance(params, list):
            return _error(request_id, INVALID_REQUEST, "params must be an array")
        try:
            result = self.chain.request(item["method"], params)
        except RpcError as exc:
            return _error(request_id, exc.code, str(exc))
        except Exception as exc:  # report, keep serving: a test chain must survive odd input
            log.exception("eth test chain failed on %s", item["method"])
            return _error(request_id, -32603, f"internal error: {type(exc).__name__}: {exc}")
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    def _inject(self, item: dict[str, Any]) -> dict[str, Any]:
        params = item.get("params") or []
        count = params[0] if params else 1
        status = params[1] if len(params) > 1 else 429
        delay_ms = params[2] if len(params) > 2 else 0
        if not isinstance(count, int) or count < 0 or not isinstance(delay_ms, int) or delay_ms < 0:
            return _error(item.get("id"), -32602, "coffer_injectFaults(count >= 0, status, delayMs >= 0)")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            return _error(item.get("id"), -32602, "status must be an HTTP status code or null")
        self._faults.set(count, status, delay_ms / 1000)
        return {"jsonrpc": "2.0", "id": item.get("id"), "result": True}

    @staticmethod
    def _json(obj: Any) -> Reply:
        return Reply(200, json.dumps(obj).encode(), "application/json")

    def start(self) -> None:
        self._http.start()
        if self._block_time_s:
            self._miner = PeriodicMiner(lambda: self.chain.mine(1), self._block_time_s, "eth-miner")
            self._miner.start()

    def stop(self) -> None:
        if self._miner is not None:
            self._miner.stop()
        self._http.stop()
