"""Errors of the wallet package: keys, derivation paths, mnemonics, addresses and the registry.

Every message is one line a user or a client can act on, and never contains key material.
"""

from __future__ import annotations


class WalletError(Exception):
    """Root of the wallet package's errors."""


class InvalidKeyError(WalletError):
    """An extended key, public key or private key is malformed, corrupted or out of range."""


class WrongNetworkError(WalletError):
    """A key or address belongs to another network than the one asked for."""


class DerivationError(WalletError):
    """A derivation cannot be done (hardened step from a public key, bad path, bad index)."""


class InvalidMnemonicError(WalletError):
    """A BIP39 mnemonic has an unknown word, a wrong length or a bad checksum."""


class InvalidAddressError(WalletError):
    """An address is malformed, has a bad checksum, or is for another chain or network."""


class ConfigError(WalletError):
    """The wallet configuration (COFFER_WALLET_CONFIG) is missing or malformed."""


class UnknownAssetError(WalletError):
    """The asset is not configured for deposit addresses."""


class UnknownUserError(WalletError):
    """The user does not exist in the ledger's `users` table."""
