"""Errors of the ledger package: one root (`LedgerError`), one subclass per kind of mistake.

Messages are one line a user or operator can act on; they never carry secrets.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Root of every ledger error."""


class UnknownUserError(LedgerError):
    """A user id that is not in `users`."""


class UnknownAssetError(LedgerError):
    """An asset code that is not in `assets`."""


class UnknownMarketError(LedgerError):
    """A market symbol that is not in `markets` (or is disabled)."""


class UnknownDepositError(LedgerError):
    """A deposit key that was never credited."""


class InvalidAmountError(LedgerError):
    """An amount that is not a positive integer in ledger units, or not on the tick/lot grid."""


class InsufficientFundsError(LedgerError):
    """Available balance too small for a freeze or a withdrawal hold."""


class ArithmeticInvariantError(LedgerError):
    """A settlement would break a ledger invariant (frozen below zero, overfill)."""


class BalanceMovedError(LedgerError):
    """A batch computed on balances read without a lock would take an available balance below
    zero: the balance fell meanwhile (a deposit reversal). The batch is computed again on
    locked rows."""


class OffsetMovedError(LedgerError):
    """A consumer's offset row no longer holds what its batch was computed on (another consumer
    of the same stream committed meanwhile): nothing of the batch was written; recover."""


class RememberedStateError(LedgerError):
    """The intake decided a batch on what it remembered (ledger/intake_cache.py) and that may be
    out of date: a reject that depends on a balance, a client order id already taken, or a
    deposit reversal since its balances were read (`lowered`). Nothing of the batch was written;
    it is decided again on a fresh read."""

    def __init__(self, message: str, *, lowered: bool = False) -> None:
        super().__init__(message)
        self.lowered = lowered


class IntakeProtocolError(LedgerError):
    """An intake stream entry that does not decode into a known request."""


class AuditFailedError(LedgerError):
    """The audit found balances that the durable records do not explain."""
