"""The new-order feed: intake -> settlement, so settlement need not read new orders back.

Every order the engine names was inserted by an intake consumer, committed, and forwarded to
`match:in{M}`. Until settlement applies an event to it, its settlement state is what the intake
wrote: pending, nothing filled, `frozen_remaining` = the freeze. The intake therefore XADDs the
settlement fields of the orders it forwards to `settle:orders{M}` in the same pipeline, just
BEFORE the commands (so the entry exists before the engine can see the order), and the
settlement consumer reads that stream in the same XREAD as `match:out{M}`. An order whose entry
it has is not read from PostgreSQL; any other is (the feed is an optimisation and may lose
entries: trimmed, a dropped read-ahead, a Redis that lost its tail).

An entry may be used only while no settlement has changed its order. `OrderFeed.accept` holds
the rule: an entry is taken only for an order not in memory whose id is above every id this
consumer ever brought into memory from PostgreSQL, and above every id taken from an entry of the
same intake shard (a shard forwards its orders in increasing id order). A settlement change
needs the order in memory, so a later entry for it (a duplicate) is always refused. Only the
intake's first forward of a batch writes entries (a re-send after a restart writes none), and a
consumer starting over takes only entries written after its start (`start_at`), since an
earlier instance may have changed the orders of older ones.

The key shares the market's hash tag with `match:out{M}` (one XREAD for both on Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from redis.asyncio import Redis

FIELD = b"o"
MAXLEN = 1000  # entries kept (about: MAXLEN ~); one entry is one forward of one market

# (id, user_id, side, type, price_ticks, frozen_asset, frozen_remaining)
NewOrder = tuple[int, int, str, str, int | None, str, int]

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[int, list[NewOrder]])


def feed_key(market: str) -> str:
    return f"settle:orders{{{market}}}"


def encode_entry(shard: int, orders: Iterable[NewOrder]) -> bytes:
    return _ENCODER.encode((shard, list(orders)))


def decode_entry(raw: bytes) -> tuple[int, list[NewOrder]]:
    return _DECODER.decode(raw)


async def last_entry_id(redis: Redis, market: str) -> str:
    """The id of the feed's newest entry ("0-0" when empty): where a starting consumer begins."""
    newest: Any = await redis.xrevrange(feed_key(market), count=1)
    if not newest:
        return "0-0"
    eid = newest[0][0]
    return eid.decode() if isinstance(eid, bytes) else str(eid)


class OrderFeed:
    """A settlement consumer's position in `settle:orders{M}` and the rule for using an entry."""

    def __init__(self, market: str) -> None:
        self.key = feed_key(market)
        self.position = "0-0"
        self._loaded_max = 0  # the highest id brought into memory from PostgreSQL
        self._shard_max: dict[int, int] = {}  # per intake shard, the highest id taken from an entry
        self.taken = 0  # orders taken from entries since start (tests and diagnostics)

    def start_at(self, position: str) -> None:
        self.position = position
        self._loaded_max = 0
        self._shard_max.clear()

    def loaded(self, ids: Iterable[int]) -> None:
        """`ids` were brought into memory from PostgreSQL."""
        self._loaded_max = max(self._loaded_max, max(ids, default=0))

    def accept(self, raw: bytes, known: Any) -> list[NewOrder]:
        """The orders of one entry that may be used (`known`: the ids in memory)."""
        shard, orders = decode_entry(raw)
        floor = max(self._loaded_max, self._shard_max.get(shard, 0))
        fresh = [o for o in orders if o[0] > floor and o[0] not in known]
        if orders:
            self._shard_max[shard] = max(self._shard_max.get(shard, 0), max(o[0] for o in orders))
        self.taken += len(fresh)
        return fresh
