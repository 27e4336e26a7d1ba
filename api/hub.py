"""One Redis pub/sub connection per API process, fanned out to in-process listeners.

The trading API hears three things on pub/sub: the ledger's replies to its intake requests
(on this instance's reply channel), each user's events (fills, order states, balances), and
market data. Opening a pub/sub connection per waiting request or per WebSocket would not
scale, so `EventHub` keeps one, subscribes a channel while at least one `Listener` wants it
(reference counted; the subscription lingers `linger_s` after the last listener leaves, so a
busy user costs no SUBSCRIBE/UNSUBSCRIBE per order) and hands each message to every
listener's bounded queue without ever waiting: a listener whose queue is full is marked
`overflowed` and gets nothing more (a slow WebSocket client is dropped rather than slowing
the others). Replies are matched to waiting
requests by their request id. Pub/sub is at-most-once; callers fall back to reading
PostgreSQL when a message does not come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("api.hub")


class Listener:
    """Messages `(channel, data)` of the channels it listens to, in a bounded queue."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize)
        self.overflowed = False
        self.overflow_event = asyncio.Event()
        self.channels: set[str] = set()

    def offer(self, channel: str, data: bytes) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((channel, data))
        except asyncio.QueueFull:
            self.overflowed = True
            self.overflow_event.set()

    async def get(self, timeout_s: float | None = None) -> tuple[str, bytes] | None:
        """The next message, or None after `timeout_s`."""
        try:
            if timeout_s is None:
                return await self.queue.get()
            return await asyncio.wait_for(self.queue.get(), timeout_s)
        except TimeoutError:
            return None


class EventHub:
    """Owns the pub/sub connection; `start()` in the lifespan, `close()` after."""

    def __init__(self, redis_url: str, reply_channel: str, decode_reply: Callable[[bytes], Any]) -> None:
        self._redis_url = redis_url
        self._reply_channel = reply_channel
        self._decode_reply = decode_reply
        self._client: Any = None
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: dict[str, set[Listener]] = {}
        self._waiters: dict[str, asyncio.Future[Any]] = {}
        self._lock = asyncio.Lock()
        self._ready = asyncio.Event()
        self._subscribed: set[str] = set()  # channels subscribed in Redis (listened to, or lingering)
        self._idle_since: dict[str, float] = {}
        self._last_sweep = 0.0
        self.linger_s = 10.0

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.from_url(self._redis_url)
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="api-event-hub")

    async def _connect(self) -> None:
        self._pubsub = self._client.pubsub()
        self._subscribed = set(self._listeners)
        self._idle_since.clear()
        await self._pubsub.subscribe(self._reply_channel, *self._subscribed)
        self._ready.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._pubsub is not None:
            await self._pubsub.aclose()
            self._pubsub = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        for fut in self._waiters.values():
            fut.cancel()

    async def _run(self) -> None:
        import redis.exceptions

        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except (redis.exceptions.ConnectionError, OSError) as exc:
                self._ready.clear()
                log.warning("pub/sub connection lost (%s); reconnecting", exc)
                await asyncio.sleep(0.5)
                with contextlib.suppress(redis.exceptions.ConnectionError, OSError):
                    await self._pubsub.aclose()
                    await self._connect()
                continue
            if msg is None:
                await self._expire_idle()
                continue
            if msg.get("type") != "message":
                continue
            channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(msg["channel"])
            data: bytes = msg["data"]
            if channel == self._reply_channel:
                self._on_reply(data)
                continue
            for listener in tuple(self._listeners.get(channel, ())):
                listener.offer(channel, data)

    def _on_reply(self, data: bytes) -> None:
        try:
            reply = self._decode_reply(data)
        except Exception:  # a malformed reply must not stop the hub
            log.exception("undecodable reply on %s", self._reply_channel)
            return
        fut = self._waiters.pop(reply.rid, None)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    async def wait_ready(self, timeout_s: float) -> bool:
        """True once the pub/sub connection is up and subscribed (False after `timeout_s`)."""
        if self._ready.is_set():
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def expect_reply(self, rid: str) -> asyncio.Future[Any]:
        """A future resolved with the ledger's reply to request `rid` (register before sending)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = fut
        return fut

    def forget_reply(self, rid: str) -> None:
        self._waiters.pop(rid, None)

    async def add(self, listener: Listener, channel: str) -> None:
        async with self._lock:
            subs = self._listeners.setdefault(channel, set())
            subs.add(listener)
            listener.channels.add(channel)
            if channel in self._subscribed:
                self._idle_since.pop(channel, None)
                return
            self._subscribed.add(channel)
            if self._pubsub is not None:
                await self._pubsub.subscribe(channel)

    async def remove(self, listener: Listener, channel: str) -> None:
        """Stop delivering `channel` to `listener`. The Redis subscription lingers for `linger_s`
        after its last listener left (a user placing orders in a row costs no SUBSCRIBE /
        UNSUBSCRIBE per order); `_expire_idle` drops it afterwards."""
        async with self._lock:
            subs = self._listeners.get(channel)
            listener.channels.discard(channel)
            if not subs or listener not in subs:
                return
            subs.discard(listener)
            if not subs:
                del self._listeners[channel]
                self._idle_since[channel] = time.monotonic()
        await self._expire_idle()

    async def _expire_idle(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.linger_s / 2:
            return
        self._last_sweep = now
        async with self._lock:
            stale = [c for c, t in self._idle_since.items() if now - t >= self.linger_s and c not in self._listeners]
            for channel in stale:
                del self._idle_since[channel]
                self._subscribed.discard(channel)
            if stale and self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(*stale)

    async def remove_all(self, listener: Listener) -> None:
        for channel in tuple(listener.channels):
            await self.remove(listener, channel)

    @contextlib.asynccontextmanager
    async def listening(self, channels: list[str], maxsize: int = 1000) -> AsyncIterator[Listener]:
        listener = Listener(maxsize)
        try:
            for channel in channels:
                await self.add(listener, channel)
            yield listener
        finally:
            await self.remove_all(listener)
