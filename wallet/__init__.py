"""Wallet: HD keys (BIP32/39/44/84/86, Ethereum m/44'/60'), xpub-only address derivation,
address encodings and validation, and the deposit-address registry (PostgreSQL).

Pure derivation and encoding live in `bip32`, `bip39`, `addresses`, `derive`; the registry
(`registry`) and owner look-up (`addressbook`) are the only modules that talk to PostgreSQL.
"""

from __future__ import annotations

from wallet.addressbook import AddressBook
from wallet.addresses import validate_address
from wallet.errors import InvalidAddressError, WalletError

__all__ = ["AddressBook", "InvalidAddressError", "WalletError", "validate_address"]
