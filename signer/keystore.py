"""Encrypted keystore file: a BIP39 mnemonic sealed with scrypt + AES-256-GCM in versioned JSON.

File format (version 1)::

    {"format": "coffer-keystore", "version": 1,
     "fingerprint": "d90c6a4f",                      # BIP32 master fingerprint, in clear
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<hex 16 bytes>"},
     "cipher": {"name": "aes-256-gcm", "nonce": "<hex 12 bytes>"},
     "check": "<hex 16 bytes>",                       # passphrase verifier, see below
     "ciphertext": "<hex>"}

scrypt derives 64 bytes from the passphrase: the first 32 are the AES key, the last 32 feed
`check = SHA-256("coffer-keystore-check" || k2)[:16]`, which tells a wrong passphrase apart
from a damaged file (it costs an attacker exactly one scrypt per guess, like the cipher).
Every clear header field (format, version, fingerprint, kdf, cipher) is authenticated as GCM
associated data, so editing any of them, or the ciphertext, is detected. The plaintext is
the mnemonic's words (English BIP39, no BIP39 passphrase). `UnlockedSeed` holds the secret
and shows only the fingerprint in its repr.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.errors import CorruptKeystoreError, KeystoreError, WrongPassphraseError

FORMAT = "coffer-keystore"
VERSION = 1
# Strong defaults for real keystores: 2**17 * 8 * 128 bytes = 128 MiB of memory per attempt.
DEFAULT_SCRYPT_N = 2**17
DEFAULT_SCRYPT_R = 8
DEFAULT_SCRYPT_P = 1
MIN_SCRYPT_N = 2**10  # refuse files (or callers) that ask for a trivially cheap KDF
_CHECK_LABEL = b"coffer-keystore-check"


class UnlockedSeed:
    """A decrypted BIP39 seed. Its repr, str and pickling never reveal the secret."""

    __slots__ = ("_mnemonic", "_seed", "fingerprint")

    def __init__(self, mnemonic: str) -> None:
        from mnemonic import Mnemonic

        words = " ".join(mnemonic.split())
        if not Mnemonic("english").check(words):
            raise KeystoreError("the mnemonic is not a valid English BIP39 phrase (word or checksum error)")
        self._mnemonic = words
        self._seed = Mnemonic.to_seed(words, passphrase="")
        self.fingerprint = master_fingerprint(self._seed)

    def seed_bytes(self) -> bytes:
        """The 64-byte BIP39 seed (secret: never log it)."""
        return self._seed

    def mnemonic_words(self) -> str:
        """The mnemonic (secret: shown once at `init`, never logged)."""
        return self._mnemonic

    def __repr__(self) -> str:
        return f"UnlockedSeed(fingerprint={self.fingerprint!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("UnlockedSeed cannot be pickled")


def master_fingerprint(seed: bytes) -> str:
    """BIP32 master key fingerprint (first 4 bytes of HASH160 of the master pubkey), as hex."""
    from embit.bip32 import HDKey

    root = HDKey.from_seed(seed)
    return bytes(root.my_fingerprint).hex()


def generate_mnemonic(words: int) -> str:
    """A fresh English BIP39 mnemonic of 12 or 24 words from the OS CSPRNG."""
    from mnemonic import Mnemonic

    strength = {12: 128, 24: 256}.get(words)
    if strength is None:
        raise KeystoreError(f"--words must be 12 or 24, got {words}")
    return str(Mnemonic("english").generate(strength=strength))


@dataclass(frozen=True, slots=True)
class KdfParams:
    n: int
    r: int
    p: int
    salt: bytes

    def validate(self) -> None:
        if self.n < MIN_SCRYPT_N or self.n & (self.n - 1):
            raise KeystoreError(f"scrypt n must be a power of two >= {MIN_SCRYPT_N}, got {self.n}")
        if not (1 <= self.r <= 64 and 1 <= self.p <= 16):
            raise KeystoreError(f"scrypt r/p out of range (r={self.r}, p={self.p})")
        if len(self.salt) < 16:
            raise KeystoreError("scrypt salt must be at least 16 bytes")


def _derive(passphrase: str, kdf: KdfParams) -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    out = Scrypt(salt=kdf.salt, length=64, n=kdf.n, r=kdf.r, p=kdf.p).derive(passphrase.encode("utf-8"))
    enc_key = out[:32]
    check = hashlib.sha256(_CHECK_LABEL + out[32:]).digest()[:16]
    return enc_key, check


def _header(doc: dict[str, Any]) -> bytes:
    """The authenticated associated data: the clear header in canonical JSON."""
    head = {k: doc[k] for k in ("format", "version", "fingerprint", "kdf", "cipher")}
    return json.dumps(head, sort_keys=True, separators=(",", ":")).encode()


def seal(
    seed: UnlockedSeed,
    passphrase: str,
    *,
    scrypt_n: int = DEFAULT_SCRYPT_N,
    scrypt_r: int = DEFAULT_SCRYPT_R,
    scrypt_p: int = DEFAULT_SCRYPT_P,
) -> dict[str, Any]:
    """Encrypt `seed` under `passphrase`; returns the keystore document (JSON-ready dict)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not passphrase:
        raise KeystoreError("an empty passphrase is not allowed for a keystore")
    kdf = KdfParams(scrypt_n, scrypt_r, scrypt_p, secrets.token_bytes(16))
    kdf.validate()
    nonce = secrets.token_bytes(12)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": seed.fingerprint,
        "kdf": {"name": "scrypt", "n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": kdf.salt.hex()},
        "cipher": {"name": "aes-256-gcm", "nonce": nonce.hex()},
    }
    key, check = _derive(passphrase, kdf)
    ciphertext = AESGCM(key).encrypt(nonce, seed.mnemonic_words().encode("utf-8"), _header(doc))
    doc["check"] = check.hex()
    doc["ciphertext"] = ciphertext.hex()
    return doc


def _parse(doc: object) -> tuple[dict[str, Any], KdfParams, bytes, bytes, bytes]:
    """Validate the document's shape; raises CorruptKeystoreError / KeystoreError."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptKeystoreError("not a Coffer keystore (missing or wrong 'format')")
    if doc.get("version") != VERSION:
        raise KeystoreError(f"unsupported keystore version {doc.get('version')!r} (this signer reads {VERSION})")
    try:
        kdf_doc = doc["kdf"]
        cipher = doc["cipher"]
        if kdf_doc["name"] != "scrypt" or cipher["name"] != "aes-256-gcm":
            raise KeystoreError("unsupported KDF or cipher in keystore")
        kdf = KdfParams(int(kdf_doc["n"]), int(kdf_doc["r"]), int(kdf_doc["p"]), bytes.fromhex(kdf_doc["salt"]))
        nonce = bytes.fromhex(cipher["nonce"])
        check = bytes.fromhex(doc["check"])
        ciphertext = bytes.fromhex(doc["ciphertext"])
        fingerprint = doc["fingerprint"]
    except KeystoreError:
        raise
    except (KeyError, TypeError, ValueError):
        raise CorruptKeystoreError("keystore file is damaged: a field is missing or not valid hex/number") from None
    if not (isinstance(fingerprint, str) and len(fingerprint) == 8) or len(nonce) != 12 or len(check) != 16:
        raise CorruptKeystoreError("keystore file is damaged: bad fingerprint, nonce or check length")
    try:
        kdf.validate()
    except KeystoreError as exc:
        raise CorruptKeystoreError(f"keystore file is damaged: {exc}") from None
    return doc, kdf, nonce, check, ciphertext


def unseal(doc: object, passphrase: str) -> UnlockedSeed:
    """Decrypt a keystore document.

    Raises WrongPassphraseError when the passphrase does not match, CorruptKeystoreError when
    the passphrase matches but the file was modified (or is damaged), KeystoreError otherwise.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    doc, kdf, nonce, check, ciphertext = _parse(doc)
    key, expected_check = _derive(passphrase, kdf)
    if not hmac.compare_digest(check, expected_check):
        raise WrongPassphraseError("wrong passphrase for this keystore")
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _header(doc))
    except InvalidTag:
        raise CorruptKeystoreError(
            "keystore file was tampered with or is damaged: authentication failed"
        ) from None
    try:
        seed = UnlockedSeed(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, KeystoreError):
        raise CorruptKeystoreError("keystore content is not a valid mnemonic") from None
    if seed.fingerprint != doc["fingerprint"]:
        raise CorruptKeystoreError("keystore fingerprint does not match its content")
    return seed


def read_keystore(path: Path) -> dict[str, Any]:
    """Load the JSON document of a keystore file (not yet decrypted)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} does not exist") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CorruptKeystoreError(f"keystore {path} is damaged: not valid JSON") from None
    if not isinstance(doc, dict):
        raise CorruptKeystoreError(f"keystore {path} is damaged: not a JSON object")
    return doc


def load(path: Path, passphrase: str) -> UnlockedSeed:
    """Read and decrypt the keystore at `path` (see `unseal` for the errors)."""
    return unseal(read_keystore(path), passphrase)


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, overwrite: bool = True) -> None:
    """Write `data` to `path` via a temp file in the same directory and a rename."""
    path = Path(path)
    if not overwrite and path.exists():
        raise KeystoreError(f"{path} already exists; refusing to overwrite a keystore")
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, doc: dict[str, Any]) -> None:
    """Write a new keystore file (mode 0600); never overwrites an existing file."""
    write_atomic(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), overwrite=False)
