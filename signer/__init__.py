"""Coffer's signer: encrypted keystore, PSBT and Ethereum signing, signing policy, hot signer, cold CLI.

Importing this package loads only the standard library; the crypto libraries load inside the
functions that need them, and the PostgreSQL policy store (`signer.policy_store`) is never
imported by the cold CLI.
"""

from __future__ import annotations

from signer.errors import (
    CorruptKeystoreError,
    DerivationError,
    EthTxRefusedError,
    KeystoreError,
    PolicyError,
    PolicyRefusedError,
    PsbtRefusedError,
    SignerError,
    UsageError,
    WrongPassphraseError,
)

__all__ = [
    "CorruptKeystoreError",
    "DerivationError",
    "EthTxRefusedError",
    "KeystoreError",
    "PolicyError",
    "PolicyRefusedError",
    "PsbtRefusedError",
    "SignerError",
    "UsageError",
    "WrongPassphraseError",
]
