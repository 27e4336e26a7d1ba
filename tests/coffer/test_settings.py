"""Settings: built from the environment, frozen, validated, secrets masked."""

from __future__ import annotations

import dataclasses

import pytest

from coffer.errors import SettingsError
from coffer.settings import MaskedURL, Secret, Settings, mask_url


def test_from_env_reads_variables_and_masks_secrets() -> None:
    s = Settings.from_env(
        {
            "COFFER_REDIS_URL": "redis://:r3dispass@127.0.0.1:6400/0",
            "COFFER_DATABASE_URL": "postgresql://app:pgpass@db:5432/coffer",
            "COFFER_SERVICE_TOKEN": "tok-very-secret",
            "COFFER_INTAKE_SHARDS": "8",
        }
    )
    assert s.redis_url.get() == "redis://:r3dispass@127.0.0.1:6400/0"
    assert s.intake_shards == 8
    text = repr(s) + str(s)
    for secret in ("r3dispass", "pgpass", "tok-very-secret"):
        assert secret not in text
    assert "postgresql://app:***@db:5432/coffer" in text


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.env = "prod"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COFFER_INTAKE_SHARDS": "x"}, "COFFER_INTAKE_SHARDS must be an integer"),
        ({"COFFER_INTAKE_SHARDS": "0"}, "COFFER_INTAKE_SHARDS must be >= 1"),
        ({"COFFER_REDIS_PORT": "70000"}, "redis_port must be a TCP port"),
        ({"COFFER_REDIS_URL": "http://x"}, "COFFER_REDIS_URL must start with"),
        ({"COFFER_DATABASE_URL": "mysql://u:pw@h/db"}, "COFFER_DATABASE_URL must start with"),
        ({"COFFER_ENV": "prod", "COFFER_SERVICE_TOKEN": "changeme"}, "COFFER_SERVICE_TOKEN must be set"),
        ({"COFFER_ENV": "staging"}, "COFFER_ENV must be dev, test or prod"),
    ],
)
def test_bad_values_are_refused_with_a_reason(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        Settings.from_env(env)
    assert "pw@" not in str(info.value)


def test_secret_and_url_masking() -> None:
    assert "abc" not in repr(Secret("abc"))
    assert "abc" not in str(MaskedURL("redis://:abc@h:1/0"))
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
