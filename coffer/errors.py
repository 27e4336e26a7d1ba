"""Errors of the composition root: settings, local services, migrations, the CLI."""

from __future__ import annotations


class CofferError(Exception):
    """Root of the composition layer's errors; its message is one line a user can act on."""


class SettingsError(CofferError):
    """An environment variable or flag has a value that cannot be used."""


class ServiceError(CofferError):
    """A local or external service could not be started or reached."""


class MigrationError(CofferError):
    """A migration file is malformed or failed to apply."""
