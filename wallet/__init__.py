"""Wallet: HD keys (BIP32/39/44/84/86, Ethereum m/44'/60'), xpub-only address derivation,
address encodings and validation, and the deposit-address registry (PostgreSQL).

Pure derivation and encoding live in `bip32`, `bip39`, `bech32`, `addresses`, `derive`;
`config` reads the deposit-address config; `registry` (allocation, look-ups) and
`addressbook` (in-memory owner look-up for the watchers) are the only modules that talk to
PostgreSQL, through a connection the caller passes in.
"""

from __future__ import annotations

from wallet.addressbook import AddressBook
from wallet.addresses import validate_address
from wallet.bip32 import ExtendedKey, parse_extended_key
from wallet.derive import AccountDeriver, open_account
from wallet.errors import InvalidAddressError, WalletError

__all__ = [
    "AccountDeriver",
    "AddressBook",
    "ExtendedKey",
    "InvalidAddressError",
    "WalletError",
    "open_account",
    "parse_extended_key",
    "validate_address",
]
