"""Errors of the signer package: one root, `SignerError`, and one subclass per concern.

Every message is written for the custody officer or the calling service: it says what was
refused and why, in one line, and never contains a seed, a private key or a passphrase.
"""

from __future__ import annotations


class SignerError(Exception):
    """Root of every error the signer raises on purpose."""


class KeystoreError(SignerError):
    """The keystore file cannot be used (missing, malformed, unsupported)."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not open this keystore."""


class CorruptKeystoreError(KeystoreError):
    """The keystore file was modified or damaged: its authentication tag does not verify."""


class DerivationError(SignerError):
    """A derivation path or account request is invalid for the chain/network."""


class PsbtRefusedError(SignerError):
    """The PSBT is malformed or fails a safety check; nothing was signed."""


class EthTxRefusedError(SignerError):
    """The Ethereum transaction description is invalid or unsafe; nothing was signed."""


class PolicyError(SignerError):
    """The signing policy configuration is invalid."""


class PolicyRefusedError(SignerError):
    """The hot signer's policy refused a request; the withdrawal should go to the cold path."""

    def __init__(self, message: str, *, rule: str | None) -> None:
        super().__init__(message)
        self.rule = rule


class UsageError(SignerError):
    """The command line or an input file is unusable as given."""
