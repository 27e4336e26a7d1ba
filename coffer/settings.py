"""Settings: one frozen object built once from the environment and passed explicitly.

Nothing here is read at import time. `Settings.from_env()` is called by entry points only.
Secrets are wrapped in `Secret`, whose repr and str never show the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from coffer.errors import SettingsError


class Secret:
    """A string that never shows itself in repr, str, logs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


class MaskedURL(Secret):
    """A service URL that may carry a password: repr shows it with the password masked."""

    def __repr__(self) -> str:
        return f"MaskedURL({mask_url(self.get())!r})"

    __str__ = __repr__


PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "password"})


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a Coffer process needs to know about its environment.

    `redis_url` / `database_url` empty means "start private servers under `data_dir`"
    (what `coffer up` does); set them to use external instances instead.
    """

    env: str = "dev"
    data_dir: Path = Path(".coffer")
    redis_url: MaskedURL = field(default_factory=lambda: MaskedURL(""))
    database_url: MaskedURL = field(default_factory=lambda: MaskedURL(""))
    redis_port: int = 0
    postgres_port: int = 0
    host: str = "127.0.0.1"
    trading_api_port: int = 8000
    deposit_api_port: int = 8001
    service_token: Secret = field(default_factory=lambda: Secret(""))
    # Intake streams (user shards): one intake consumer each, users spread by id. Measured with
    # bench.pipeline on the 2-core machine (all in one `ledger-intake` process), since a batch is
    # one read and one write statement: 1 shard sustained 26.2k orders/s with p50 9.5 ms and p99
    # 15.7 ms at 5k orders/s; 2 shards 25.8k, 13.2 / 26.5 ms; 4 shards 25.1k, 30.9 / 55.2 ms.
    # One consumer batches the same flow into fewer, bigger batches. More shards pay off when they
    # run on more cores than one machine's two. The count changes only while the intake streams
    # are drained (`coffer ledger run` checks).
    intake_shards: int = 1
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        settings = cls(
            env=env.get("COFFER_ENV", "dev"),
            data_dir=Path(env.get("COFFER_DATA_DIR", ".coffer")),
            redis_url=MaskedURL(env.get("COFFER_REDIS_URL", "")),
            database_url=MaskedURL(env.get("COFFER_DATABASE_URL", "")),
            redis_port=_int(env, "COFFER_REDIS_PORT", 0),
            postgres_port=_int(env, "COFFER_POSTGRES_PORT", 0),
            host=env.get("COFFER_HOST", "127.0.0.1"),
            trading_api_port=_int(env, "COFFER_TRADING_API_PORT", 8000),
            deposit_api_port=_int(env, "COFFER_DEPOSIT_API_PORT", 8001),
            service_token=Secret(env.get("COFFER_SERVICE_TOKEN", "")),
            intake_shards=_int(env, "COFFER_INTAKE_SHARDS", 1),
            log_level=env.get("COFFER_LOG_LEVEL", "INFO").upper(),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.env not in ("dev", "test", "prod"):
            raise SettingsError(f"COFFER_ENV must be dev, test or prod, got {self.env!r}")
        for name in ("redis_port", "postgres_port", "trading_api_port", "deposit_api_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{name} must be a TCP port (0-65535), got {port}")
        if self.intake_shards < 1:
            raise SettingsError(f"COFFER_INTAKE_SHARDS must be >= 1, got {self.intake_shards}")
        for name, url, schemes in (
            ("COFFER_REDIS_URL", self.redis_url.get(), ("redis", "rediss", "unix")),
            ("COFFER_DATABASE_URL", self.database_url.get(), ("postgres", "postgresql")),
        ):
            if url and urlsplit(url).scheme not in schemes:
                raise SettingsError(
                    f"{name} must start with one of {', '.join(s + '://' for s in schemes)}; "
                    f"got {mask_url(url)!r}"
                )
        if self.env == "prod" and self.service_token.get().lower() in PLACEHOLDER_SECRETS:
            raise SettingsError("COFFER_SERVICE_TOKEN must be set to a real secret when COFFER_ENV=prod")

    def replace(self, **changes: object) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        new = Settings(**values)  # type: ignore[arg-type]
        new.validate()
        return new
