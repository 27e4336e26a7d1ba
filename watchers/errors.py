"""Errors of the watchers package: chain clients, the scanning core and the watcher daemon.

`WatcherError` is the root; its message is one line an operator can act on and never holds
secrets (node URLs are masked before they reach a message).
"""

from __future__ import annotations


class WatcherError(Exception):
    """Root of the watchers' errors."""


class ChainClientError(WatcherError):
    """A chain API could not be reached or kept failing after every retry."""


class ChainRpcError(ChainClientError):
    """A node answered with an error that retrying will not fix (JSON-RPC error, HTTP 4xx)."""


class InconsistentAnswerError(WatcherError):
    """A node's answers contradict each other (parent hash, missing tx, wrong block hash).

    The daemon logs it and retries the block later; nothing in such an answer is credited.
    """


class ReorgTooDeepError(WatcherError):
    """The fork point lies below the oldest block hash the watcher keeps: operator action needed."""


class WatcherConfigError(WatcherError):
    """A watcher setting (chain, network, URL, asset) is missing or unusable."""
