"""A lean Redis pub/sub listener for the benchmarks: one raw connection, hiredis parsing, no
per-message machinery.

redis-py's `PubSub.get_message` costs about 100 microseconds of the benchmark client's CPU per
message (timeouts, push-response dispatch, a dict per message). Listening to every user's events
at 5,000 orders/s through it took about 60% of one of this machine's two cores, which the
system under test then lacked. Here a whole socket read is parsed in one go and each message
reaches the callback as (channel, data)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import hiredis


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class Listener:
    """SUBSCRIBEs `channels` (or PSUBSCRIBEs `pattern`) and calls `on_message(channel, data)` for
    every message until `close()`."""

    def __init__(self, redis_url: str, on_message: Callable[[bytes, bytes], None]) -> None:
        url = urlsplit(redis_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 6379
        self._on_message = on_message
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._confirmed = 0
        self._subscribed = asyncio.Event()
        self._expected = 0

    async def start(self, channels: Iterable[str] = (), pattern: str | None = None) -> None:
        self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        names = [c.encode() for c in channels]
        if pattern is not None:
            self._writer.write(_command(b"PSUBSCRIBE", pattern.encode()))
            self._expected = 1
        for i in range(0, len(names), 1000):
            self._writer.write(_command(b"SUBSCRIBE", *names[i:i + 1000]))
        self._expected += len(names)
        await self._writer.drain()
        self._task = asyncio.create_task(self._loop())
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def _loop(self) -> None:
        assert self._reader is not None
        parser = hiredis.Reader()
        on_message = self._on_message
        while True:
            data = await self._reader.read(1 << 16)
            if not data:
                return
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                kind = reply[0]
                if kind == b"message":
                    on_message(reply[1], reply[2])
                elif kind == b"pmessage":
                    on_message(reply[2], reply[3])
                elif kind in (b"subscribe", b"psubscribe"):
                    self._confirmed += 1
                    if self._confirmed >= self._expected:
                        self._subscribed.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
