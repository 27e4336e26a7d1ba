"""Errors of the withdrawal processor: one root, `WithdrawalError` (a `LedgerError`), and its kinds.

Messages are one line an operator or a client can act on; they never carry keys or seeds.
"""

from __future__ import annotations

from ledger.errors import LedgerError


class WithdrawalError(LedgerError):
    """Root of the withdrawal processor's errors."""


class InsufficientHotFundsError(WithdrawalError):
    """The hot wallet's confirmed coins (or balance) cannot pay the withdrawal and its fee."""


class BuildError(WithdrawalError):
    """A transaction cannot be built as asked (bad amount, destination, fee data)."""


class BroadcastRejectedError(WithdrawalError):
    """A node refused the signed transaction for good (not a transient failure)."""


class ProcessorConfigError(WithdrawalError):
    """A processor setting (chain URL, export folder, hot signer) is missing or unusable."""


class UnknownWithdrawalError(WithdrawalError):
    """No withdrawal (or transaction) with that id."""


class WrongStageError(WithdrawalError):
    """The operator asked for something the withdrawal's current stage does not allow."""
