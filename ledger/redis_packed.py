"""A script call with thousands of arguments (the batched PUBLISH of user events and replies),
packed by hiredis in C and sent as one buffer on a connection of redis-py's pool: redis-py's
asyncio client packs in Python, argument by argument, into many small buffers, which cost the
consumers more than Redis's own work (py-spy: packing and writing were about a fifth of
settlement's CPU at 5,000 orders/s)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import hiredis
from redis.exceptions import NoScriptError, ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript


async def evalsha(script: AsyncScript, args: Sequence[Any]) -> Any:
    """EVALSHA of `script` (no keys) with `args`; loads the script once when Redis does not have
    it (NOSCRIPT: the call did nothing) and calls again."""
    redis: Redis = script.registered_client  # type: ignore[assignment]
    packed = hiredis.pack_command(("EVALSHA", script.sha, 0, *args))
    try:
        return await _call(redis, packed)
    except NoScriptError:
        await redis.script_load(script.script)
        return await _call(redis, packed)


async def _call(redis: Redis, packed: bytes) -> Any:
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(packed, check_health=False)
        return await conn.read_response()
    except ResponseError:
        raise  # Redis answered: the connection is fine
    except BaseException:
        await conn.disconnect()  # a half-read reply must not reach the next user of the connection
        raise
    finally:
        await pool.release(conn)
