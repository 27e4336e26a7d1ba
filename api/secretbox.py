"""Encryption at rest of API secrets: AES-256-GCM under one master key.

HMAC verification needs the secret itself, so it cannot be stored hashed; it is stored
encrypted instead, with the key id as associated data (a ciphertext copied to another key
row does not decrypt). The master key comes from `COFFER_API_MASTER_KEY` (URL-safe base64
of 32 bytes). Outside `prod`, when that variable is unset, a key file
`<COFFER_DATA_DIR>/api-master.key` is created once (mode 0600) and reused, so `coffer up`
keeps working across restarts; in `prod` the variable is required.
The master key's repr shows a fingerprint only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from api.errors import CredentialsError

MASTER_KEY_ENV = "COFFER_API_MASTER_KEY"
MASTER_KEY_FILE = "api-master.key"
_NONCE_BYTES = 12


class MasterKey:
    """A 32-byte AES key; `repr` shows `MasterKey(fp=<8 hex>)`, never the bytes."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise CredentialsError(f"the API master key must be 32 bytes, got {len(key)}")
        self._key = key

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"coffer-api-master" + self._key).hexdigest()[:8]

    def __repr__(self) -> str:
        return f"MasterKey(fp={self.fingerprint})"

    __str__ = __repr__

    def encrypt(self, plaintext: str, *, key_id: str) -> bytes:
        """nonce(12) || AES-GCM ciphertext+tag, bound to `key_id`."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + AESGCM(self._key).encrypt(nonce, plaintext.encode(), key_id.encode())

    def decrypt(self, blob: bytes, *, key_id: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(self._key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], key_id.encode()).decode()
        except InvalidTag:
            raise CredentialsError(
                f"the secret of API key {key_id} does not decrypt with master key {self.fingerprint}"
            ) from None

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(32))

    def encoded(self) -> str:
        """URL-safe base64 of the key, for writing the key file or an env var (never log it)."""
        return base64.urlsafe_b64encode(self._key).decode()


def _decode(raw: str, where: str) -> MasterKey:
    try:
        key = base64.urlsafe_b64decode(raw.strip() + "=" * (-len(raw.strip()) % 4))
    except (binascii.Error, ValueError):
        raise CredentialsError(f"{where} is not URL-safe base64") from None
    if len(key) != 32:
        raise CredentialsError(f"{where} must decode to 32 bytes, got {len(key)}")
    return MasterKey(key)


def load_master_key(env_name: str, data_dir: Path, environ: Mapping[str, str] | None = None) -> MasterKey:
    """The master key from the environment, or (outside prod) from/into the data dir's key file.

    `env_name` is the deployment environment (`dev`, `test`, `prod`).
    """
    env = os.environ if environ is None else environ
    raw = env.get(MASTER_KEY_ENV, "")
    if raw:
        return _decode(raw, MASTER_KEY_ENV)
    if env_name == "prod":
        raise CredentialsError(f"{MASTER_KEY_ENV} must be set when COFFER_ENV=prod")
    path = data_dir / MASTER_KEY_FILE
    if path.exists():
        return _decode(path.read_text(), str(path))
    data_dir.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.encoded() + "\n")
    return key
