"""The settlement consumer of one market: `match:out{M}` -> trades, order states, balances.

One loop: XREAD a batch of engine event entries after the stored offset; skip every event whose
`seq` is not above the last applied one (settlement is idempotent by the engine's per-market
sequence number; `trades` has the unique key (market, seq) besides), settle trades with the pure
arithmetic, release what finished orders still hold, then write: trades, order states (one
`UPDATE ... FROM unnest`), the journal (the batch's net change per (user, asset), kind `settle`,
ref = the batch's last seq; `trades` and `orders` hold each event's detail and the audit checks
that they explain those rows), balances (one upsert in sorted lock order) and the offset, in ONE
call of `ledger_settle_batch` (migration 0107) that commits on its own and moves the offset only
from the seq the batch was computed on. A batch's call is sent while the batch before it is still
being written (it waits on the offset row's lock inside). Then publish user events (fills, order
states, new balances) to `user:events:<user>`, built only for the users who have a subscriber on
that channel (asked once per batch after reading it: ledger/online.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import asyncpg.exceptions as asyncpg_errors

from ledger.arithmetic import add_deltas, release_deltas, settle_trade
from ledger.consumer_loop import RecoveringLoop, StreamTrimmer
from ledger.errors import ArithmeticInvariantError, LedgerError
from ledger.events import EvCancelReject, EvDone, EvOpen, EvTrade, SettleEvent, decode_event_rows
from ledger.intake import ReadAhead, _retrieve, publish_many, publish_script, stream_id_key
from ledger.intake_protocol import encode_user_events, user_events_channel
from ledger.markets import Market
from ledger.online import OnlineUsers
from ledger.order_feed import FIELD as FEED_FIELD
from ledger.order_feed import OrderFeed, last_entry_id
from ledger.recovery import CommandLog
from ledger.repo import balance_arrays, load_markets
from matcher import keys
from matcher.protocol import BATCH_FIELD, DoneReason

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

log = logging.getLogger("ledger.settlement")

FINAL_STATE = {DoneReason.FILLED.value: "filled", DoneReason.CANCELED.value: "canceled",
               DoneReason.EXPIRED.value: "expired", DoneReason.REJECTED.value: "rejected"}


@dataclass(slots=True)
class _Order:
    """An order's settlement state, kept in memory between batches (see SettlementConsumer);
    the fields are the columns of `_ORDER_SELECT` in order. (A msgspec Struct with gc=False is
    built from a row about four times faster, but its attributes are slower to read and write
    than slots on CPython 3.11, and the batch loop touches them far more often: bench.ledger's
    settlement CPU was no lower with it.)"""

    id: int
    user_id: int
    side: str
    type: str
    price_ticks: int | None
    frozen_asset: str
    frozen_remaining: int
    filled_lots: int
    filled_quote: int
    fee_paid: int
    state: str
    done_reason: str | None

    @property
    def oid(self) -> int:
        """The order's id as `arithmetic.Hold` names it (settle_trade reads the order itself)."""
        return self.id


@dataclass
class _Write:
    """A batch's write sent to PostgreSQL: its task, the orders it changed, its last stream id."""

    task: asyncio.Task[SettleResult]
    dirty: frozenset[int]
    last_id: str
    applied: bool  # it applies events (else it moves only the stream position)


# An order's own event as computed, before anyone asked who listens: (seq, user, oid, state,
# filled_lots, ts_ms), or (seq, user, oid, None, reason, ts_ms) for a cancel the engine rejected.
# The fills come from the batch's trade rows. Maps are built only for users with a subscriber.
OrderEvent = tuple[int, int, int, str | None, Any, int]


@dataclass
class SettleResult:
    applied: int = 0
    skipped: int = 0
    users: set[int] = field(default_factory=set)  # every user the batch's events name
    # the batch's trades (rows as `_Prepared.trade_ints` has them, one tuple per trade; their taker
    # sides) and order events, in seq order: the user events, before they are built
    trades: list[tuple[int, ...]] = field(default_factory=list)
    trade_sides: list[str] = field(default_factory=list)
    order_events: list[OrderEvent] = field(default_factory=list)
    # the users whose events are published: those with a subscriber (ledger/online.py), asked
    # while the batch is written
    listeners: Collection[int] = frozenset()
    balances: list[tuple[int, str, int, int]] = field(default_factory=list)

    def events(self, symbol: str, base: str, quote: str) -> dict[int, list[dict[str, Any]]]:
        """The listeners' fill, order and cancel_rejected events as the maps published, per user,
        in seq order (a trade's buyer's fill before its seller's)."""
        listeners = self.listeners
        keyed: dict[int, list[tuple[int, int, dict[str, Any]]]] = defaultdict(list)
        for row, taker_side in zip(self.trades, self.trade_sides, strict=True):
            if row[3] not in listeners and row[4] not in listeners:  # the buyer, the seller
                continue
            seq, buy_id, sell_id, buyer, seller, price, qty, base_amount, quote_amount, buyer_fee, seller_fee, ts = row
            for rank, user, oid, side, fee, fee_asset in ((0, buyer, buy_id, "buy", buyer_fee, base),
                                                         (1, seller, sell_id, "sell", seller_fee, quote)):
                if user in listeners:
                    keyed[user].append((seq, rank, {
                        "type": "fill", "market": symbol, "order_id": oid, "side": side,
                        "liquidity": "taker" if side == taker_side else "maker", "seq": seq,
                        "price_ticks": price, "qty_lots": qty, "base_amount": base_amount,
                        "quote_amount": quote_amount, "fee": fee, "fee_asset": fee_asset, "ts_ms": ts}))
        for ev in self.order_events:
            if ev[1] in listeners:
                seq, user, oid, state, value, ts = ev
                keyed[user].append((seq, 0, {"type": "order", "market": symbol, "order_id": oid, "state": state,
                                             "filled_lots": value, "ts_ms": ts} if state is not None else
                                    {"type": "cancel_rejected", "market": symbol, "order_id": oid, "reason": value,
                                     "ts_ms": ts}))
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)  # the caller adds balance events
        for user, items in keyed.items():
            out[user] = [ev for _seq, _rank, ev in sorted(items, key=_seq_rank)]
        return out


_seq_rank = itemgetter(0, 1)  # a keyed event's (seq, rank)


@dataclass
class _Prepared:
    """One batch, computed and ready to write: what the write transaction needs and nothing it
    must still read (the order values are snapshots, taken before the next batch changes them)."""

    base_seq: int  # the settled seq the batch was computed on (the offset row must still hold it)
    last_seq: int  # the seq the offset row holds after the batch
    last_id: str
    trade_ints: list[list[int]]  # rows: the bigint columns of `_TRADE_INSERT` (empty: no trade)
    trade_sides: list[str]
    # The changed orders as two 2-D arrays (rows: see `_ORDER_UPDATE`), not seven 1-D ones: asyncpg
    # tests each element of an array parameter for being a sub-array (isinstance against
    # collections.abc classes, a Python-level call each), but of a 2-D array only the first
    # row's elements; 7 arrays of k orders cost 7k such calls, these two 2k.
    order_ints: list[list[int]]  # id, frozen_remaining, filled_lots, filled_quote, fee_paid
    order_texts: list[list[str | None]]  # state, done_reason
    command_rows: list[Any]
    command_completed: frozenset[int]  # rows that fill a placeholder of an earlier batch (CommandLog)
    net: dict[tuple[int, str], list[int]]
    result: SettleResult
    dirty_ids: frozenset[int]


class StaleBatchError(LedgerError):
    """The offset row no longer holds the seq a prepared batch was computed on (another
    instance settled this market meanwhile): recover from the database."""


LIVE = frozenset(("pending", "open"))
# The unique keys a batch's rows hit when another instance settled them already.
_SETTLED_KEYS = ("trades_pkey", "settled_command_runs_pkey", "settled_command_takers_pkey")
# The offset row still holds the seq a batch was computed on, or the whole statement refuses
# (ledger_refuse, migration 0105; CASE fixes the order of evaluation).
_SEQ_GUARD = ("CASE WHEN last_seq = {seq} THEN true "
              "ELSE ledger_refuse('CF003', 'the settlement offset moved') = 0 END")
WRITES_IN_FLIGHT = 2  # a batch's write is sent while the one before it still runs (see `_write`)

# A batch's write (migration 0107): market, stream id, last seq, base seq, trades bigint[12][k] and
# taker sides, orders bigint[5][k] and text[2][k] (state, done_reason), new command rows
# bigint[3][k], completed placeholders bigint[2][k], balance deltas bigint[3][k] and assets.
_SETTLE_BATCH = ("SELECT * FROM ledger_settle_batch($1::text, $2::text, $3::bigint, $4::bigint, $5::bigint[], "
                 "$6::text[], $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[])")

# _Order's fields, of the orders of `$1` in market `$2`. The ids are looked up by primary key
# alone (a market condition beside them let a planner walk the market instead): the
# MATERIALIZED CTE keeps the market test out of the index scan. An order of another market is
# not returned, so it is unknown here, as it must be.
_ORDER_COLUMNS = ("id, user_id, side, type, price_ticks, frozen_asset, frozen_remaining, filled_lots, filled_quote, "
                  "fee_paid, state, done_reason")
_ORDER_SELECT = (f"WITH o AS MATERIALIZED (SELECT {_ORDER_COLUMNS}, market FROM orders WHERE id = ANY($1::bigint[])) "
                 f"SELECT {_ORDER_COLUMNS} FROM o WHERE market = $2")
CACHE_LIMIT = 200_000  # live orders kept in memory between batches (beyond it, re-read when needed)


class SettlementConsumer(RecoveringLoop):
    """Consumes `match:out{market}`; one instance per market (the offset row lock fences a second).

    Pipelined: batch N+1 is computed while batch N's transaction runs (the database and this
    process work at the same time). That needs no read inside the transaction: after intake
    inserted an order, this consumer is the only writer of its settlement state, so it keeps
    the live orders it touched in memory (`_orders`) and reads from the database only orders it
    never saw or dropped from memory, whose last change is committed (an order is dropped only
    when no batch in flight or being prepared changed it). The write checks that the offset row
    still holds the seq the batch was computed on; any failure throws the memory away and
    recovers from the database (`start`)."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, market: str, batch_size: int = 5000,
                 block_ms: int = 500, publish: bool = True) -> None:
        self.pool = pool
        self.redis = redis
        self.symbol = market
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.errors = 0  # recovered failures since start (tests assert on it)
        self.orders_read = 0  # orders read from PostgreSQL (not from memory or the new-order feed)
        self.rewrites = 0  # batch statements sent again: they had overtaken the batch before them (`_write`)
        self.publish_events = publish
        self.stream = keys.match_out(market)
        self.last_id = "0-0"  # the stream position of the last batch committed or being written
        self.market: Market | None = None
        self._seq = 0  # the engine seq of the last event committed or being written
        self._orders: dict[int, _Order] = {}
        self._writes: deque[_Write] = deque()  # batches sent to PostgreSQL, oldest first
        self._publishing: asyncio.Task[None] | None = None
        self._publish_script = publish_script(redis)
        self._online = OnlineUsers(redis)
        self._ahead = ReadAhead()
        self._commands = CommandLog(market)  # recovery record (ledger/recovery.py)
        self._feed = OrderFeed(market)  # new orders from the intake (ledger/order_feed.py)
        self._feed_key = self._feed.key.encode()
        self._committed_id = "0-0"
        self._trimmer = StreamTrimmer(redis, self.stream)

    async def start(self) -> None:
        self._ahead.drop()
        writes, self._writes = self._writes, deque()
        for w in writes:  # their outcome, commit or rollback, is what is read back below
            with contextlib.suppress(Exception):
                await w.task
        self._orders.clear()
        async with self.pool.acquire() as conn:
            await conn.execute("INSERT INTO settlement_offsets (market) VALUES ($1) ON CONFLICT DO NOTHING",
                               self.symbol)
            off = await conn.fetchrow("SELECT stream_id, last_seq FROM settlement_offsets WHERE market = $1",
                                      self.symbol)
            assert off is not None
            self.last_id, self._seq = off["stream_id"], int(off["last_seq"])
            self._committed_id = self.last_id
            self.market = (await load_markets(conn))[self.symbol]
            await self._commands.load(conn)
        # only entries written from now on: an earlier instance may have changed older ones' orders
        self._feed.start_at(await last_entry_id(self.redis, self.symbol))

    async def _trim(self) -> None:
        """Trim match:out behind both of its consumers: this one's committed offset and the
        market-data consumer's (`md:ckpt`). Without a market-data checkpoint nothing is trimmed:
        a market-data consumer started later replays match:out from its first entry."""
        try:
            md: Any = await self.redis.hget(keys.md_checkpoint(self.symbol), "out_id")
        except Exception as exc:  # best effort, as the trim itself
            log.warning("settlement %s: no market-data checkpoint to trim against: %s", self.symbol, exc)
            md = None
        if md is None:
            self._trimmer.skip()
            return
        md_id = md.decode() if isinstance(md, bytes) else str(md)
        mine = self._committed_id
        await self._trimmer.trim(mine if stream_id_key(mine) <= stream_id_key(md_id) else md_id)

    async def step(self, block_ms: int | None = None) -> int:
        """Read and compute one batch, then send its write, with at most one earlier batch's write
        still running (`WRITES_IN_FLIGHT`). Returns entries read; 0 (nothing new) only after every
        batch read so far committed."""
        block = self.block_ms if block_ms is None else block_ms  # <= 0: do not wait (never BLOCK 0)
        batch = await self._ahead.take(self.last_id) or await self._fetch(self.last_id, block if block > 0 else None)
        if not batch:
            await self._finish_writes()
            return 0
        n_entries, last_id, events = batch
        if n_entries >= self.batch_size:  # behind: read the next batch while this one is computed
            self._ahead.start(last_id, self._fetch(last_id, None))
        try:
            prepared = await self._prepare(events, last_id)
            # A batch that moves only the stream position (its guard is not behind the lock) is
            # sent once every earlier batch committed, and so is the batch after it (both hold the
            # same seq: the later one could commit first).
            alone = not prepared.result.applied or bool(self._writes and not self._writes[-1].applied)
            await self._finish_writes(keep=prepared.dirty_ids, leave=0 if alone else WRITES_IN_FLIGHT - 1)
        except BaseException:
            self._ahead.drop()
            raise
        self.last_id = last_id
        before = self._writes[-1].task if self._writes else None
        task = asyncio.ensure_future(self._write_and_publish(prepared, before))
        task.add_done_callback(_retrieve)  # a failure is raised by _finish_writes or start
        self._writes.append(_Write(task, prepared.dirty_ids, last_id, bool(prepared.result.applied)))
        return n_entries

    async def _write_and_publish(self, prepared: _Prepared, before: asyncio.Task[SettleResult] | None) -> SettleResult:
        """Write the batch; once committed, start publishing its user events at once (not when the
        next batch comes: at low load that could be a whole XREAD block later). Each batch's
        publishing starts after the batch before it started its own and waits for it, so each
        user's events stay in order."""
        res = prepared.result
        # who listens, asked now that the batch is read (ledger/online.py), while it is written
        listening = (asyncio.ensure_future(self._online.among(res.users))
                     if self.publish_events and res.applied else None)
        try:
            result = await self._write(prepared, before)
        except BaseException:
            if listening is not None:
                listening.cancel()
            raise
        if listening is not None:
            result.listeners = await listening
        if before is not None:  # committed before this one (this statement waited for it)
            await asyncio.wait([before])
        if self.publish_events and result.applied and result.listeners:
            # best effort (pub/sub is at-most-once): in the background, overlapping the next batch
            await self._flush_publishing()
            self._publishing = asyncio.create_task(self._publish(result))
        return result

    def _in_flight(self) -> set[int]:
        """The orders changed by batches sent but not yet committed."""
        return set().union(*(w.dirty for w in self._writes))

    async def _finish_writes(self, keep: frozenset[int] = frozenset(), leave: int = 0) -> None:
        """Wait for the oldest batches sent until at most `leave` are still running; raise a
        failure. Drop from memory the orders each committed batch finished (the engine names them
        no more) unless a batch still running or `keep` (the batch prepared next) changed them,
        and trim match:out when due."""
        orders = self._orders
        while len(self._writes) > leave:
            w = self._writes[0]
            await w.task
            self._writes.popleft()
            self._committed_id = w.last_id
            busy = self._in_flight()
            for oid in w.dirty:
                o = orders.get(oid)
                if o is not None and o.state not in LIVE and oid not in keep and oid not in busy:
                    del orders[oid]
        if self._trimmer.due():
            await self._trim()

    async def _fetch(self, from_id: str, block: int | None) -> tuple[int, str, list[SettleEvent]] | None:
        """XREAD the entries after `from_id` and decode them: (entries, last entry id, events).
        The same XREAD takes the new-order feed's entries into memory (`_take_feed`); a read that
        brought only those is repeated (when blocking) or answered with None."""
        feed = self._feed
        while True:
            resp: Any = await self.redis.xread({self.stream: from_id, feed.key: feed.position},
                                               count=self.batch_size, block=block)
            entries: list[tuple[bytes, dict[bytes, bytes]]] = []
            for name, got in resp or ():
                if name == self._feed_key:
                    self._take_feed(got)
                else:
                    entries = got
            if entries:
                break
            if not resp or block is None:
                return None
        events: list[SettleEvent] = []
        for _eid, fields in entries:
            events.extend(decode_event_rows(fields[BATCH_FIELD]))
        last = entries[-1][0]
        return len(entries), last.decode() if isinstance(last, bytes) else str(last), events

    def _take_feed(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Bring the orders of new-order feed entries into memory, as `OrderFeed.accept` allows."""
        orders, feed = self._orders, self._feed
        for _eid, fields in entries:
            for oid, user, side, typ, price, asset, frozen in feed.accept(fields[FEED_FIELD], orders):
                orders[oid] = _Order(oid, user, side, typ, price, asset, frozen, 0, 0, 0, "pending", None)
        last = entries[-1][0]
        feed.position = last.decode() if isinstance(last, bytes) else str(last)

    async def flush_events(self) -> None:
        """Finish the batch being written (a failure is logged: it rolled back and is settled
        again after a restart) and wait for the user events published so far."""
        try:
            await self._finish_writes()
        except Exception as exc:
            log.warning("settlement %s: the last batch did not commit: %s", self.symbol, exc)
        await self._flush_publishing()

    @property
    def label(self) -> str:
        return f"settlement {self.symbol}"

    async def _publish(self, result: SettleResult) -> None:
        assert self.market is not None
        per_user = result.events(self.symbol, self.market.base, self.market.quote)
        listeners = result.listeners
        for user, asset, available, frozen in result.balances:
            if user in listeners:
                per_user[user].append({"type": "balance", "asset": asset, "available": available, "frozen": frozen})
        await publish_many(self._publish_script, [(user_events_channel(user), encode_user_events(user, evs))
                                        for user, evs in per_user.items()])

    async def _load_orders(self, oids: set[int]) -> None:
        """Bring the orders of `oids` that are not in memory in from the database."""
        orders = self._orders
        missing = [oid for oid in oids if oid not in orders]
        if not missing:
            return
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_ORDER_SELECT, missing, self.symbol)
        orders.update({r[0]: _Order(*r) for r in rows})
        self._feed.loaded(missing)
        self.orders_read += len(rows)
        if len(rows) < len(missing):
            unknown = oids - orders.keys()
            raise ArithmeticInvariantError(f"engine events for orders the ledger does not know: {sorted(unknown)[:5]}")

    def _forget(self, keep: frozenset[int]) -> None:
        """Past CACHE_LIMIT, drop the live orders from memory except those in `keep` and in the
        batch being written (changed by batches not yet committed); they are re-read when named."""
        orders = self._orders
        if len(orders) > CACHE_LIMIT:
            busy = self._in_flight()
            for oid in [oid for oid in orders if oid not in keep and oid not in busy]:
                del orders[oid]

    async def _prepare(self, events: list[SettleEvent], last_id: str) -> _Prepared:
        """Compute one batch (typed events, see `decode_event_rows`) on the state after the batch
        before it; reads only orders not in memory."""
        assert self.market is not None
        m = self.market
        res = SettleResult()
        base_seq = self._seq
        # Each seq once: drop what was applied before AND repeats inside this batch (an engine
        # whose MULTI reply was lost re-writes the same events, possibly into the same read).
        by_seq: dict[int, SettleEvent] = {}
        for e in events:
            seq = e.seq
            if seq > base_seq and seq not in by_seq:
                by_seq[seq] = e
        fresh = [by_seq[k] for k in sorted(by_seq)]
        res.skipped = len(events) - len(fresh)
        if not fresh:
            return _Prepared(base_seq, base_seq, last_id, [], [], [], [], [], frozenset(), {}, res, frozenset())
        if fresh[0].seq != base_seq + 1:
            log.warning("settlement %s: seq gap %d -> %d", self.symbol, base_seq, fresh[0].seq)
        oids: set[int] = set()
        users: set[int] = set()
        for e in fresh:
            if type(e) is EvTrade:
                oids.add(e.taker)
                oids.add(e.maker)
                users.add(e.taker_user)
                users.add(e.maker_user)
            else:
                users.add(e.user)
                if type(e) is not EvCancelReject:
                    oids.add(e.oid)
        await self._load_orders(oids)
        res.users = users
        orders = self._orders
        command_rows = self._commands.segment(fresh, lambda oid: orders[oid].state)  # before states change
        command_completed = self._commands.completed
        trades: list[tuple[int, ...]] = []  # the bigint columns of `_TRADE_INSERT`, one tuple per trade
        trade_sides: list[str] = []
        net: dict[tuple[int, str], list[int]] = {}  # the batch's net change per (user, asset)
        order_events = res.order_events if self.publish_events else []
        event = order_events.append
        dirty: set[int] = set()
        mark = dirty.add

        for e in fresh:
            if type(e) is EvTrade:
                seq, price, qty, taker_side, ts_ms = e.seq, e.price, e.qty, e.taker_side, e.ts_ms
                buy, sell = (orders[e.taker], orders[e.maker]) if taker_side == "buy" else (
                    orders[e.maker], orders[e.taker])
                eff = settle_trade(m, buy=buy, sell=sell, price_ticks=price, qty_lots=qty, taker_side=taker_side)
                add_deltas(net, eff.deltas)
                quote_amount = eff.quote_amount
                buy.frozen_remaining -= eff.buy_consumed
                sell.frozen_remaining -= eff.sell_consumed
                buy.fee_paid += eff.buyer_fee
                sell.fee_paid += eff.seller_fee
                for o in (buy, sell):
                    o.filled_lots += qty
                    o.filled_quote += quote_amount
                mark(buy.id)
                mark(sell.id)
                trades.append((seq, buy.id, sell.id, buy.user_id, sell.user_id, price, qty, eff.base_amount,
                               quote_amount, eff.buyer_fee, eff.seller_fee, ts_ms))
                trade_sides.append(taker_side)
            elif type(e) is EvOpen:
                o = orders[e.oid]
                if o.state == "pending":
                    o.state = "open"
                    mark(o.id)
                event((e.seq, o.user_id, o.id, "open", o.filled_lots, e.ts_ms))
            elif type(e) is EvDone:
                o = orders[e.oid]
                add_deltas(net, release_deltas(o.user_id, o.frozen_asset, o.frozen_remaining))
                o.frozen_remaining = 0
                o.state = FINAL_STATE[e.reason]
                o.done_reason = e.detail or e.reason
                mark(o.id)
                event((e.seq, o.user_id, o.id, o.state, o.filled_lots, e.ts_ms))
            else:  # cancel_reject
                event((e.seq, e.user, e.oid, None, e.reason, e.ts_ms))
        changed = [orders[oid] for oid in sorted(dirty)]  # snapshots: the next batch changes these objects
        order_ints = [[o.id for o in changed], [o.frozen_remaining for o in changed],
                      [o.filled_lots for o in changed], [o.filled_quote for o in changed],
                      [o.fee_paid for o in changed]]
        order_texts: list[list[str | None]] = [[o.state for o in changed], [o.done_reason for o in changed]]
        self._seq = fresh[-1].seq
        res.applied = len(fresh)
        # the trades as one bigint[12][k] (a row per column: transposed in C) and their taker sides
        trade_ints = [list(col) for col in zip(*trades, strict=True)]
        if self.publish_events:
            res.trades, res.trade_sides = trades, trade_sides
        prepared = _Prepared(base_seq, self._seq, last_id, trade_ints, trade_sides, order_ints, order_texts,
                             command_rows, command_completed, net, res, frozenset(dirty))
        self._forget(prepared.dirty_ids)
        return prepared

    async def _write(self, p: _Prepared, before: asyncio.Task[SettleResult] | None) -> SettleResult:
        """Write one prepared batch (`_write_once`), possibly while the batch `before` it is still
        being written: `ledger_settle_batch` waits for that batch's commit on the offset row's
        lock. The lock may come first (two connections): the offset is then not yet moved and
        the batch is refused; it is sent again once that batch committed (a rival's move fails
        it again)."""
        try:
            return await self._write_once(p)
        except StaleBatchError:
            if before is None:
                raise
            await asyncio.wait([before])
            if before.cancelled() or before.exception() is not None:
                raise
            self.rewrites += 1
            return await self._write_once(p)

    async def _write_once(self, p: _Prepared) -> SettleResult:
        """Write one prepared batch in one call that commits on its own: `ledger_settle_batch`
        (migration 0107) locks the offset row, refuses unless it holds the seq the batch was
        computed on (StaleBatchError sends the consumer back to the database), then writes the
        trades, order states, settled commands, journal, balances (one upsert in sorted lock
        order) and the offset."""
        async with self.pool.acquire() as conn:
            try:
                if not p.result.applied:  # only the stream position moves (events settled before)
                    await conn.execute(
                        "UPDATE settlement_offsets SET stream_id = CASE WHEN "
                        "(split_part($2, '-', 1)::bigint, split_part($2, '-', 2)::bigint) > "
                        "(split_part(stream_id, '-', 1)::bigint, split_part(stream_id, '-', 2)::bigint) "
                        "THEN $2 ELSE stream_id END WHERE market = $1 AND " + _SEQ_GUARD.format(seq="$3"),
                        self.symbol, p.last_id, p.base_seq)
                    return p.result
                commands, completed = CommandLog.arrays(p.command_rows, p.command_completed)
                balances, assets = balance_arrays(p.net)
                has_orders = bool(p.order_ints[0])
                rows = await conn.fetch(_SETTLE_BATCH, self.symbol, p.last_id, p.last_seq, p.base_seq,
                                        p.trade_ints, p.trade_sides, p.order_ints if has_orders else [],
                                        p.order_texts if has_orders else [], commands, completed, balances, assets)
                p.result.balances = [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]
            except asyncpg_errors.PostgresError as exc:
                # the offset's guard, or this batch's trades already there: another instance
                # settled this market meanwhile (nothing of this batch was written)
                if exc.sqlstate == "CF003" or getattr(exc, "constraint_name", None) in _SETTLED_KEYS:
                    raise StaleBatchError(f"settlement {self.symbol}: the batch computed on seq {p.base_seq} "
                                          f"was overtaken ({exc})") from exc
                raise
        return p.result
