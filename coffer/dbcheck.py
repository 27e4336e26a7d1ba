"""Reachability checks for external Redis and PostgreSQL, with one-line errors.

Used before anything starts, so an unreachable URL is reported as one clear line naming
what could not be reached (password masked), never as a traceback.
"""

from __future__ import annotations

from coffer.errors import ServiceError
from coffer.settings import mask_url


async def check_postgres(url: str, timeout_s: float = 5.0) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceError(f"cannot reach PostgreSQL at {mask_url(url)}: {_reason(exc)}") from exc
    await conn.close()


async def check_redis(url: str, timeout_s: float = 5.0) -> None:
    import redis.asyncio as aredis
    from redis.exceptions import RedisError

    client = aredis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        raise ServiceError(f"cannot reach Redis at {mask_url(url)}: {_reason(exc)}") from exc
    finally:
        await client.aclose()


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
