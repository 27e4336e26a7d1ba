"""Errors of the matcher package: one root, `MatcherError`, and one subclass per concern.

Engine rejections are not errors (they are `Done(rejected)` events); these are for operators:
a bad flag, a corrupt snapshot, a lost lease, an unreachable Redis.
"""

from __future__ import annotations


class MatcherError(Exception):
    """Root of the matcher's errors; the message is one line an operator can act on."""


class SnapshotError(MatcherError):
    """An engine snapshot cannot be decoded or does not match its checkpoint."""


class ReplayError(MatcherError):
    """A replay flag (tick, lot, stp) is unusable."""


class LeaseLostError(MatcherError):
    """Another runner holds this market's lease: our fencing token was refused."""


class RecoveryError(MatcherError):
    """Recovery could not rebuild the state the checkpoint describes."""
