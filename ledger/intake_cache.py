"""What the intake consumer of a shard remembers between batches, so that most batches are
decided without the read statement (pure: no I/O).

The intake is the only writer of its shard's orders and, besides a deposit reversal, the only
thing that lowers an available balance. So what it last read or wrote stays true enough:

- `balances`: every balance row of the users it has seen (a user is here with ALL its rows, or
  not at all), as the last read or write left them. Settlement, deposit credits and withdrawal
  releases only RAISE an available balance meanwhile, so a remembered available is a lower
  bound: an order it accepts is covered (the write's per-row guard checks it again). A reject
  that depends on a balance (insufficient funds, a negative balance) is not trusted: the batch
  is decided again on a fresh read. A deposit reversal bumps a counter (`balance_lowerings`,
  migration 0108) in its transaction, and the intake's write is refused (CF004) when the counter
  moved since its balances were read: then all of them are forgotten.
- `orders`: the orders it placed or read, by id and by (user, client order id), with the state it
  last knew. A "live" state may be stale (the order filled since): a cancel of it is forwarded and
  the engine, which knows, rejects it (`cancel_rejected`, the race any cancel can meet). A final
  state never is. A place whose client order id is not here is taken as new: the unique key
  `(user_id, client_order_id)` refuses the write if it is not, and the batch is decided again on a
  read. At most `max_orders` are kept (the oldest go first); the orders a batch's cancels name
  that are not here are looked up (`missing`), not read with the whole batch.
- `ids`: order ids drawn ahead from the `order_ids` sequence in blocks, for every batch (so a
  shard's order ids increase with its intake ids; ids never used are gaps, as after a rollback).
- the shard's offset row as the last write left it; the write is guarded on it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from ledger.intake_protocol import CancelRequest, PlaceOrderRequest, Request


class Known(msgspec.Struct, frozen=True, gc=False):
    """An order a batch can refer to (from the database or placed earlier). Not tracked by the
    garbage collector (the cache holds up to `max_orders` of them, which every full collection
    would otherwise walk)."""

    id: int
    user_id: int
    market: str
    client_order_id: str | None
    state: str


@dataclass(slots=True)
class BatchRead:
    """What a batch is decided on: the read statement's result, or the cache's."""

    stream_id: str
    last_iid: int
    batch_first_iid: int
    oids: list[int]
    users: set[int]
    balances: dict[tuple[int, str], list[int]]
    known: list[Known]
    lowerings: int  # the `balance_lowerings` counter the balances were read under
    from_cache: bool = False


ORDERS_MISSING = "a cancel of an order not remembered"


class IntakeCache:
    def __init__(self, max_orders: int = 200_000) -> None:
        self.max_orders = max_orders
        self.balances: dict[int, dict[str, list[int]]] = {}  # user -> asset -> [available, frozen]
        # age order, for eviction (OrderedDict: popping the oldest of a plain dict again and again
        # makes each pop scan the deleted slots before it)
        self.by_id: OrderedDict[int, Known] = OrderedDict()
        self.by_coid: dict[tuple[int, str], Known] = {}
        self._ids: list[int] = []
        self._next_id = 0  # index of the first unused id in `_ids`
        self.offset: tuple[str, int, int] | None = None  # (stream_id, last_iid, batch_first_iid)
        self.lowerings: int | None = None
        self.misses: Counter[str] = Counter()  # why batches needed the read (diagnostics)
        self.last_miss = ""
        # after a miss for ORDERS_MISSING: the order ids and (user, client order id) pairs the batch's
        # cancels name that are not remembered (the consumer looks them up, `learn`s them, serves again)
        self.missing: tuple[list[int], list[tuple[int, str]]] = ([], [])

    def _miss(self, reason: str) -> BatchRead | None:
        self.misses[reason] += 1
        self.last_miss = reason
        return None

    def preload(self, lowerings: int, rows: Iterable[tuple[int, str | None, int | None, int | None]],
                offset: tuple[str, int, int]) -> None:
        """Start from the shard's users and balance rows as one statement read them (`asset` None:
        a user without rows) under the `lowerings` count, and the shard's offset row."""
        self.forget_balances()
        self.lowerings = lowerings
        mine = self.balances
        for user, asset, available, frozen in rows:
            assets = mine.setdefault(user, {})
            if asset is not None:
                assets[asset] = [int(available or 0), int(frozen or 0)]
        self.offset = offset

    def forget_balances(self) -> None:
        self.balances.clear()
        self.lowerings = None

    @property
    def ids_left(self) -> int:
        return len(self._ids) - self._next_id

    def next_ids(self, n: int) -> list[int]:
        """The next `n` ids of the block (taken for good by `committed`, as many as the batch used)."""
        return self._ids[self._next_id:self._next_id + n]

    def add_ids(self, ids: Iterable[int]) -> None:
        self._ids = self._ids[self._next_id:] + list(ids)
        self._next_id = 0

    def serve(self, requests: Sequence[Request], users: Iterable[int], n_places: int,
              markets: Container[str], absent: frozenset[int | tuple[int, str]] = frozenset()) -> BatchRead | None:
        """The batch's read from memory, or None when something it needs is not here: a user, an
        order a cancel names (listed in `missing`; `absent`: targets the database just said do
        not exist, by id or (user, client order id)), a cancel-all or withdrawal (they need every
        live order or a locked row), an unknown market, too few ids, or no offset/counter yet."""
        if self.offset is None or self.lowerings is None:
            return self._miss("nothing committed yet")
        if self.ids_left < n_places:
            return self._miss("too few order ids")
        balances: dict[tuple[int, str], list[int]] = {}
        have = self.balances
        batch_users = set(users)
        for user in batch_users:
            rows = have.get(user)
            if rows is None:
                return self._miss("a user not read yet")
            for asset, v in rows.items():
                balances[(user, asset)] = [v[0], v[1]]
        known: list[Known] = []
        by_id, by_coid = self.by_id, self.by_coid
        placed: set[tuple[int, str]] = set()  # (user, client order id) of the batch's places so far
        missing_ids: list[int] = []
        missing_pairs: list[tuple[int, str]] = []
        for r in requests:
            if isinstance(r, PlaceOrderRequest):
                if r.market not in markets:
                    return self._miss("an unknown market")
                coid = r.client_order_id
                if coid is not None:
                    k = by_coid.get((r.user, coid))
                    if k is not None:
                        known.append(k)
                    placed.add((r.user, coid))
            elif isinstance(r, CancelRequest):
                if r.order_id is not None:
                    k = by_id.get(r.order_id)
                    if k is None and r.order_id not in absent:  # (absent: the batch rejects it as unknown)
                        missing_ids.append(r.order_id)
                elif r.client_order_id is not None:
                    pair = (r.user, r.client_order_id)
                    k = by_coid.get(pair)
                    # not remembered, but a place earlier in the batch carries it: the batch knows it
                    # (and if that place is refused, the cancel names an unknown order either way)
                    if k is None and pair not in placed and pair not in absent:
                        missing_pairs.append(pair)
                else:
                    return self._miss("a cancel naming no order")
                if k is not None:
                    known.append(k)
            else:
                return self._miss("a cancel-all or a withdrawal")
        if missing_ids or missing_pairs:
            self.missing = (missing_ids, missing_pairs)
            return self._miss(ORDERS_MISSING)
        stream_id, last_iid, batch_first_iid = self.offset
        return BatchRead(stream_id, last_iid, batch_first_iid, self.next_ids(n_places), batch_users, balances, known,
                         self.lowerings, from_cache=True)

    def learn(self, orders: Iterable[Known]) -> None:
        """Remember orders read from the database for the batch at hand (none is evicted now: the
        oldest may be what the same batch needs; `committed` evicts)."""
        for k in orders:
            self._remember(k, evict=False)

    def committed(self, read: BatchRead, balances: dict[tuple[int, str], list[int]],
                  written: Iterable[tuple[int, str, int, int]], new_orders: Iterable[Known], ids_used: int,
                  offset: tuple[str, int, int]) -> None:
        """Learn what a committed batch read and wrote: `balances` as the batch left them (read or
        remembered, plus its changes) and `written`, the rows its write returned (the truth at
        that moment), its orders, the ids it used and the offset it stored."""
        self._next_id += ids_used
        if self.lowerings != read.lowerings:
            self.forget_balances()
            self.lowerings = read.lowerings
        mine = self.balances
        for (user, asset), v in balances.items():
            mine.setdefault(user, {})[asset] = v
        for user in read.users:  # a user read without rows is known, with nothing
            mine.setdefault(user, {})
        for user, asset, available, frozen in written:
            mine.setdefault(user, {})[asset] = [available, frozen]
        for k in read.known:
            self._remember(k)
        for k in new_orders:
            self._remember(k)
        self.offset = offset

    def _remember(self, k: Known, *, evict: bool = True) -> None:
        by_id = self.by_id
        by_id[k.id] = k
        by_id.move_to_end(k.id)  # now the youngest
        if k.client_order_id is not None:
            self.by_coid[(k.user_id, k.client_order_id)] = k
        while evict and len(by_id) > self.max_orders:
            _oid, old = by_id.popitem(last=False)
            if old.client_order_id is not None and self.by_coid.get((old.user_id, old.client_order_id)) is old:
                del self.by_coid[(old.user_id, old.client_order_id)]

