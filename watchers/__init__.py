"""Chain watchers: Esplora and Ethereum JSON-RPC clients, the pure scanning and reorg core, the
repository of observations and deposit state, and the confirmation watcher daemon.

Other packages use: `watchers.repository.follow_tx` / `followed_tx_status` (the service's own
broadcast txs), the clients `watchers.esplora.EsploraClient` and `watchers.ethrpc.EthRpcClient`,
and `coffer watcher run --chain btc|eth`.
"""

from __future__ import annotations

from watchers.errors import (
    ChainClientError,
    ChainRpcError,
    InconsistentAnswerError,
    ReorgTooDeepError,
    WatcherConfigError,
    WatcherError,
)

__all__ = [
    "ChainClientError",
    "ChainRpcError",
    "InconsistentAnswerError",
    "ReorgTooDeepError",
    "WatcherConfigError",
    "WatcherError",
]
