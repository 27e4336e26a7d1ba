"""The Ethereum test chain's JSON-RPC server over HTTP on 127.0.0.1 (`coffer chain eth`).

POST / with a JSON-RPC 2.0 request or batch; answers per JSON-RPC (errors as `error` objects
with HTTP 200, as geth does). `EthRpcServer` wraps an `EthTestChain` and optionally mines a
block every `block_time_s` seconds in a background thread (empty blocks included, so block
numbers advance like a live chain). GET / answers a short liveness text.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from watchers.testchains._http import ChainHTTPServer, Reply
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
        self._stop = threading.Event()
        self._miner: threading.Thread | None = None

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

    @staticmethod
    def _json(obj: Any) -> Reply:
        return Reply(200, json.dumps(obj).encode(), "application/json")

    def _mine_periodically(self) -> None:
        assert self._block_time_s is not None
        while not self._stop.wait(self._block_time_s):
            try:
                self.chain.mine(1)
            except Exception:
                log.exception("periodic mining failed")

    def start(self) -> None:
        self._http.start()
        if self._block_time_s:
            self._miner = threading.Thread(target=self._mine_periodically, name="eth-miner", daemon=True)
            self._miner.start()

    def stop(self) -> None:
        self._stop.set()
        self._http.stop()
        if self._miner is not None:
            self._miner.join(timeout=5)
