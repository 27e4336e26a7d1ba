"""Errors of the local test chains: what a test, a client or `coffer chain` did wrong.

The root is `ChainServerError`, a `watchers.errors.WatcherError` (so `coffer chain` prints it
as one line).
`RpcError` carries a JSON-RPC error code for the Ethereum server; `TxRejectedError` is a
transaction the Bitcoin regtest server refuses (answered as HTTP 400 with its message).
"""

from __future__ import annotations

from watchers.errors import WatcherError


class ChainServerError(WatcherError):
    """Root error of watchers.testchains."""


class RpcError(ChainServerError):
    """A JSON-RPC error answer: `code` follows the JSON-RPC / EIP-1474 conventions."""

    def __init__(self, message: str, code: int = -32000) -> None:
        super().__init__(message)
        self.code = code


class TxRejectedError(ChainServerError):
    """A Bitcoin transaction refused by the regtest mempool (Esplora answers 400 with the text)."""


class NotFoundError(ChainServerError):
    """A block, transaction or resource the regtest chain does not know (HTTP 404)."""
