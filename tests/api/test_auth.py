"""Auth: signing, secrets at rest, key storage, timestamp window, replay and rate limits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from api.auth import Authenticator
from api.cli_users import create_user_with_key
from api.errors import AuthError, CredentialsError, RateLimitedError
from api.keystore import KeyCache, create_key, load_key, revoke_key
from api.secretbox import MasterKey, load_master_key
from api.signing import sign, signed_headers

NOW_MS = 1_800_000_000_000


def test_signature_covers_every_part() -> None:
    base = ("s3cret", NOW_MS, "POST", "/api/v1/orders", "a=1", b'{"x":1}')
    sig = sign(*base)
    assert len(sig) == 64
    assert sign(*base) == sig
    variants = [
        ("other", NOW_MS, "POST", "/api/v1/orders", "a=1", b'{"x":1}'),
        ("s3cret", NOW_MS + 1, "POST", "/api/v1/orders", "a=1", b'{"x":1}'),
        ("s3cret", NOW_MS, "DELETE", "/api/v1/orders", "a=1", b'{"x":1}'),
        ("s3cret", NOW_MS, "POST", "/api/v1/order", "a=1", b'{"x":1}'),
        ("s3cret", NOW_MS, "POST", "/api/v1/orders", "a=2", b'{"x":1}'),
        ("s3cret", NOW_MS, "POST", "/api/v1/orders", "a=1", b'{"x":2}'),
    ]
    assert len({sign(*v) for v in variants} | {sig}) == len(variants) + 1


def test_master_key_encrypts_bound_to_key_id_and_hides_itself(tmp_path: Path) -> None:
    master = MasterKey.generate()
    blob = master.encrypt("the-secret", key_id="ck_a")
    assert b"the-secret" not in blob
    assert master.decrypt(blob, key_id="ck_a") == "the-secret"
    with pytest.raises(CredentialsError):
        master.decrypt(blob, key_id="ck_b")
    with pytest.raises(CredentialsError):
        MasterKey.generate().decrypt(blob, key_id="ck_a")
    assert master.encoded() not in repr(master)
    assert repr(master).startswith("MasterKey(fp=")
    # outside prod a key file is created once and reused; prod requires the env var
    first = load_master_key("dev", tmp_path, environ={})
    again = load_master_key("dev", tmp_path, environ={})
    assert first.fingerprint == again.fingerprint
    assert (tmp_path / "api-master.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CredentialsError, match="COFFER_API_MASTER_KEY"):
        load_master_key("prod", tmp_path, environ={})
    from_env = load_master_key("prod", tmp_path, environ={"COFFER_API_MASTER_KEY": first.encoded()})
    assert from_env.fingerprint == first.fingerprint


@pytest.mark.asyncio
async def test_keys_stored_encrypted_and_repr_masked(db_url: str) -> None:
    master = MasterKey.generate()
    user_id, key_id, secret = await create_user_with_key(db_url, master, "t")
    conn = await asyncpg.connect(db_url)
    try:
        raw = await conn.fetchval("SELECT secret_enc FROM api_keys WHERE key_id = $1", key_id)
        assert secret.encode() not in bytes(raw)
        key = await load_key(conn, master, key_id)
        assert key is not None and key.user_id == user_id and key.secret.get() == secret
        assert secret not in repr(key)
        with pytest.raises(CredentialsError, match="does not exist"):
            await create_key(conn, master, 999_999)
        assert await revoke_key(conn, key_id)
        assert await load_key(conn, master, key_id) is None
    finally:
        await conn.close()


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.mark.asyncio
async def test_authenticator_refuses_bad_stale_replayed_and_limits_rate(db_url: str, redis_url: str) -> None:
    master = MasterKey.generate()
    user_id, key_id, secret = await create_user_with_key(db_url, master)
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    red = aioredis.from_url(redis_url)
    clock = Clock(NOW_MS)
    auth = Authenticator(KeyCache(pool, master), red, window_ms=5000, rate_per_s=5, clock_ms=clock)
    try:
        def headers(ts: int, body: bytes = b"", key: str = key_id, sec: str = secret) -> dict[str, str]:
            return signed_headers(key, sec, ts, "POST", "/api/v1/orders", "", body)

        good = headers(NOW_MS, b"{}")
        principal = await auth.authenticate(good, "POST", "/api/v1/orders", "", b"{}")
        assert principal.user_id == user_id and principal.key_id == key_id

        with pytest.raises(AuthError, match="already used"):  # replay of the same request
            await auth.authenticate(good, "POST", "/api/v1/orders", "", b"{}")
        with pytest.raises(AuthError, match="does not match"):  # body changed after signing
            await auth.authenticate(headers(NOW_MS + 1, b"{}"), "POST", "/api/v1/orders", "", b'{"a":1}')
        with pytest.raises(AuthError, match="does not match"):  # wrong secret
            await auth.authenticate(headers(NOW_MS + 2, sec="x" * 43), "POST", "/api/v1/orders", "", b"")
        with pytest.raises(AuthError, match="old"):  # stale
            await auth.authenticate(headers(NOW_MS - 5001), "POST", "/api/v1/orders", "", b"")
        with pytest.raises(AuthError, match="future"):
            await auth.authenticate(headers(NOW_MS + 5001), "POST", "/api/v1/orders", "", b"")
        with pytest.raises(AuthError, match="unknown"):
            await auth.authenticate(headers(NOW_MS + 3, key="ck_" + "0" * 24), "POST", "/api/v1/orders", "", b"")
        with pytest.raises(AuthError, match="missing header X-Coffer-Signature"):
            h = headers(NOW_MS + 4)
            del h["X-Coffer-Signature"]
            await auth.authenticate(h, "POST", "/api/v1/orders", "", b"")

        # rate limit: 5 per second per key; the good request above counted as one
        clock.now_ms = NOW_MS + 10_000
        for i in range(5):
            await auth.authenticate(headers(clock.now_ms + i), "POST", "/api/v1/orders", "", b"")
        with pytest.raises(RateLimitedError) as info:
            await auth.authenticate(headers(clock.now_ms + 9), "POST", "/api/v1/orders", "", b"")
        assert info.value.retry_after_s == 1
        clock.now_ms += 1000  # the next second has a fresh budget
        await auth.authenticate(headers(clock.now_ms), "POST", "/api/v1/orders", "", b"")
    finally:
        await red.aclose()
        await pool.close()


def test_cli_prints_credentials_once(db_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_DATA_DIR": str(tmp_path), "COFFER_ENV": "dev"}
    env.pop("COFFER_API_MASTER_KEY", None)
    out = subprocess.run([sys.executable, "-m", "coffer", "users", "create"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    user_id = int(fields["user_id"])
    secret = fields["api_secret"].strip()
    assert fields["api_key"].strip().startswith("ck_") and len(secret) == 43
    more = subprocess.run([sys.executable, "-m", "coffer", "keys", "create", "--user", str(user_id)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert more.returncode == 0, more.stderr
    assert secret not in more.stdout and "api_secret:" in more.stdout
    bad = subprocess.run([sys.executable, "-m", "coffer", "keys", "create", "--user", "987654"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "coffer: error: user 987654 does not exist"


def test_demo_user_is_created_once_and_funded_once(db_url: str, tmp_path: Path) -> None:
    import asyncio

    from ledger.demo import seed_demo

    async def seed() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            async with conn.transaction():
                await seed_demo(conn, network="regtest", usdt_contract=None)
        finally:
            await conn.close()

    asyncio.run(seed())
    env = {**os.environ, "COFFER_DATABASE_URL": db_url, "COFFER_DATA_DIR": str(tmp_path), "COFFER_ENV": "dev"}
    env.pop("COFFER_API_MASTER_KEY", None)
    runs = [subprocess.run([sys.executable, "-m", "coffer", "users", "demo"], env=env, capture_output=True,
                           text=True, timeout=60) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and "api_secret:" in runs[0].stdout
    assert (tmp_path / "demo-user.json").stat().st_mode & 0o777 == 0o600
    user_id = int(runs[0].stdout.split("user_id:")[1].split()[0])

    async def balances() -> dict[str, int]:
        conn = await asyncpg.connect(db_url)
        try:
            rows = await conn.fetch("SELECT asset, available FROM balances WHERE user_id = $1", user_id)
            return {r["asset"]: int(r["available"]) for r in rows}
        finally:
            await conn.close()

    assert asyncio.run(balances()) == {"BTC": 100_000_000, "ETH": 10_000_000_000, "USDT": 100_000_000_000}
    prod = subprocess.run([sys.executable, "-m", "coffer", "users", "demo"], env={**env, "COFFER_ENV": "prod",
                          "COFFER_SERVICE_TOKEN": "a-real-token-1234567890"}, capture_output=True, text=True,
                          timeout=60)
    assert prod.returncode == 1 and "prod" in prod.stderr
