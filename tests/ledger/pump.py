"""A minimal engine pump for ledger tests: `match:in{M}` -> matcher.engine.Engine -> `match:out{M}`.

It stands in for the matcher's runner, which is not in the tree yet: it drops commands at
or below the per-shard watermark, applies the real pure engine, and writes the events and
the checkpoint (`seq`, `in_id`, `wm:<shard>`) in one MULTI/EXEC. Its book lives in memory.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from matcher import keys
from matcher.engine import Engine
from matcher.protocol import BATCH_FIELD, Event, decode_commands, encode_batch


class EnginePump:
    def __init__(self, redis: Redis, market: str) -> None:
        self.redis = redis
        self.market = market
        self.engine = Engine()
        self.last_in = "0-0"
        self.wm: dict[int, int] = {}
        self.accepted = 0
        self.dropped = 0
        self._unsent: tuple[list[Event], dict[Any, Any]] | None = None

    async def step(self, block_ms: int | None = None) -> int:
        if self._unsent is not None:  # a write that failed (Redis down): retry the same output
            await self._write(*self._unsent)
        resp: Any = await self.redis.xread({keys.match_in(self.market): self.last_in}, count=1000, block=block_ms)
        if not resp:
            return 0
        entries = resp[0][1]
        events: list[Event] = []
        for _eid, fields in entries:
            for cmd in decode_commands(fields[BATCH_FIELD]):
                if cmd.iid <= self.wm.get(cmd.shard, 0):
                    self.dropped += 1
                    continue
                self.wm[cmd.shard] = cmd.iid
                self.accepted += 1
                events.extend(self.engine.apply(cmd))
        self.last_in = entries[-1][0].decode()
        ckpt: dict[Any, Any] = {"seq": self.engine.seq, "in_id": self.last_in}
        ckpt.update({keys.watermark_field(s): v for s, v in self.wm.items()})
        self._unsent = (events, ckpt)
        await self._write(events, ckpt)
        return len(entries)

    async def _write(self, events: list[Event], ckpt: dict[Any, Any]) -> None:
        """Events and checkpoint in one MULTI/EXEC; if the reply is lost after Redis applied it,
        the retry writes the same seqs again, which settlement drops."""
        pipe = self.redis.pipeline(transaction=True)
        if events:
            pipe.xadd(keys.match_out(self.market), {BATCH_FIELD: encode_batch(events)})
        pipe.hset(keys.checkpoint(self.market), mapping=ckpt)
        await pipe.execute()
        self._unsent = None

    async def drain(self) -> None:
        while await self.step():
            pass
