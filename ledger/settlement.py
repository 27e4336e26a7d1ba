"""The settlement consumer of one market: `match:out{M}` -> trades, order states, balances.

One loop: XREAD a batch of engine event entries after the stored offset; in ONE
PostgreSQL transaction lock the market's offset row, skip every event whose `seq` is not
above the last applied one (settlement is idempotent by the engine's per-market sequence
number; `trades` has the unique key (market, seq) besides), settle trades with the pure
arithmetic, release what finished orders still hold, then write: trades (COPY), order
states (one `UPDATE ... FROM unnest`), the journal (COPY: the batch's net change per
(user, asset), kind `settle`, ref = the batch's last seq; `trades` and `orders` hold each
event's detail and the audit checks that they explain those rows), balances (one upsert in sorted
lock order) and the offset; commit; then publish user events (fills, order states, new
balances) to `user:events:<user>`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from ledger.arithmetic import Delta, OrderHold, release_deltas, settle_trade
from ledger.consumer_loop import RecoveringLoop
from ledger.errors import ArithmeticInvariantError
from ledger.intake import ReadAhead, publish_many, publish_script, stream_id_key
from ledger.intake_protocol import encode_user_events, user_events_channel
from ledger.markets import Market
from ledger.recovery import CommandLog
from ledger.repo import aggregate, insert_rows, load_markets, upsert_journal_and
from matcher import keys
from matcher.protocol import BATCH_FIELD, DoneReason, ProtocolError

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

log = logging.getLogger("ledger.settlement")

TRADE_COLUMNS = ("market", "seq", "buy_order", "sell_order", "buyer", "seller", "taker_side", "price_ticks", "qty_lots",
                 "base_amount", "quote_amount", "buyer_fee", "seller_fee", "ts_ms")
TRADE_TYPES = ("text",) + ("bigint",) * 5 + ("text",) + ("bigint",) * 7
FINAL_STATE = {DoneReason.FILLED.value: "filled", DoneReason.CANCELED.value: "canceled",
               DoneReason.EXPIRED.value: "expired", DoneReason.REJECTED.value: "rejected"}
_FIELDS = {
    "trade": frozenset(("seq", "taker", "maker", "taker_user", "maker_user", "taker_side", "price", "qty", "ts_ms")),
    "open": frozenset(("seq", "oid", "user", "side", "price", "remaining", "ts_ms")),
    "done": frozenset(("seq", "oid", "user", "reason", "remaining", "funds_remaining", "ts_ms", "detail")),
    "cancel_reject": frozenset(("seq", "oid", "user", "reason", "ts_ms")),
}


def decode_event_rows(raw: bytes) -> list[dict[str, Any]]:
    """One `match:out` batch as its wire maps (the fields of `matcher.protocol` events), checked
    for kind and fields but not turned into dataclasses: settlement reads them directly,
    which halves its decoding cost. Raises ProtocolError like `decode_events`."""
    try:
        rows = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(f"not a msgpack batch: {exc}") from exc
    if not isinstance(rows, list):
        raise ProtocolError("batch is not a list")
    fields = _FIELDS
    for row in rows:
        try:
            need = fields.get(row["e"]) if type(row) is dict else None
        except (KeyError, TypeError):  # no kind, or an unhashable one
            need = None
        if need is None or not need <= row.keys():
            raise ProtocolError(f"unknown or incomplete event {row!r:.80}")
        if row["e"] == "done" and row["reason"] not in FINAL_STATE:
            raise ProtocolError(f"unknown done reason {row['reason']!r}")
    return rows


@dataclass(slots=True)
class _Order:
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
    dirty: bool = False


@dataclass
class SettleResult:
    applied: int = 0
    skipped: int = 0
    events: dict[int, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    balances: list[tuple[int, str, int, int]] = field(default_factory=list)


class SettlementConsumer(RecoveringLoop):
    """Consumes `match:out{market}`; one instance per market (the offset row lock fences a second)."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, market: str, batch_size: int = 5000,
                 block_ms: int = 500, publish: bool = True) -> None:
        self.pool = pool
        self.redis = redis
        self.symbol = market
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.errors = 0  # recovered failures since start (tests assert on it)
        self.publish_events = publish
        self.stream = keys.match_out(market)
        self.last_id = "0-0"
        self.market: Market | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._publish_script = publish_script(redis)
        self._ahead = ReadAhead()
        self._commands = CommandLog(market)  # recovery record (ledger/recovery.py)

    async def start(self) -> None:
        self._ahead.drop()
        async with self.pool.acquire() as conn:
            await conn.execute("INSERT INTO settlement_offsets (market) VALUES ($1) ON CONFLICT DO NOTHING",
                               self.symbol)
            self.last_id = await conn.fetchval("SELECT stream_id FROM settlement_offsets WHERE market = $1",
                                               self.symbol)
            self.market = (await load_markets(conn))[self.symbol]
            await self._commands.load(conn)

    async def step(self, block_ms: int | None = None) -> int:
        block = self.block_ms if block_ms is None else block_ms  # <= 0: do not wait (never BLOCK 0)
        batch = await self._ahead.take(self.last_id) or await self._fetch(self.last_id, block if block > 0 else None)
        if not batch:
            return 0
        n_entries, last_id, events = batch
        if n_entries >= self.batch_size:  # behind: read the next batch while this one commits
            self._ahead.start(last_id, self._fetch(last_id, None))
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                result = await self.process(conn, events, last_id)
        except BaseException:
            self._ahead.drop()
            raise
        self.last_id = last_id
        if self.publish_events and result.applied:
            # User events are best effort (pub/sub is at-most-once): publish in the background,
            # overlapping the next batch, one batch in flight at a time so each user's events
            # stay in order.
            await self.flush_events()
            self._publishing = asyncio.create_task(self._publish(result))
        return n_entries

    async def _fetch(self, from_id: str, block: int | None) -> tuple[int, str, list[dict[str, Any]]] | None:
        """XREAD the entries after `from_id` and decode them: (entries, last entry id, events)."""
        resp: Any = await self.redis.xread({self.stream: from_id}, count=self.batch_size, block=block)
        if not resp:
            return None
        entries: list[tuple[bytes, dict[bytes, bytes]]] = resp[0][1]
        events: list[dict[str, Any]] = []
        for _eid, fields in entries:
            events.extend(decode_event_rows(fields[BATCH_FIELD]))
        last = entries[-1][0]
        return len(entries), last.decode() if isinstance(last, bytes) else str(last), events

    async def flush_events(self) -> None:
        """Wait for the user events of the previous batch to be published (errors are logged)."""
        task, self._publishing = self._publishing, None
        if task is not None:
            try:
                await task
            except Exception as exc:  # the money is committed; only the notifications are lost
                log.warning("settlement %s: user events not published: %s", self.symbol, exc)

    @property
    def label(self) -> str:
        return f"settlement {self.symbol}"

    async def _publish(self, result: SettleResult) -> None:
        per_user = result.events
        for user, asset, available, frozen in result.balances:
            per_user[user].append({"type": "balance", "asset": asset, "available": available, "frozen": frozen})
        await publish_many(self._publish_script, [(user_events_channel(user), encode_user_events(user, evs))
                                        for user, evs in per_user.items()])

    async def process(self, conn: asyncpg.Connection, events: list[dict[str, Any]], last_id: str) -> SettleResult:
        """Apply one batch of events (wire rows, see `decode_event_rows`) inside the caller's transaction."""
        assert self.market is not None
        m = self.market
        res = SettleResult()
        off = await conn.fetchrow("SELECT stream_id, last_seq FROM settlement_offsets WHERE market = $1 FOR UPDATE",
                                  self.symbol)
        assert off is not None
        last_seq = int(off["last_seq"])
        # Each seq once: drop what was applied before AND repeats inside this batch (an engine
        # whose MULTI reply was lost re-writes the same events, possibly into the same read).
        by_seq: dict[int, dict[str, Any]] = {}
        for e in events:
            seq = e["seq"]
            if seq > last_seq and seq not in by_seq:
                by_seq[seq] = e
        fresh = [by_seq[k] for k in sorted(by_seq)]
        res.skipped = len(events) - len(fresh)
        if not fresh:
            if stream_id_key(last_id) > stream_id_key(off["stream_id"]):
                await conn.execute("UPDATE settlement_offsets SET stream_id = $2 WHERE market = $1", self.symbol,
                                   last_id)
            return res
        if fresh[0]["seq"] != last_seq + 1:
            log.warning("settlement %s: seq gap %d -> %d", self.symbol, last_seq, fresh[0]["seq"])
        oids: set[int] = set()
        for e in fresh:
            kind = e["e"]
            if kind == "trade":
                oids.add(e["taker"])
                oids.add(e["maker"])
            elif kind == "open" or kind == "done":
                oids.add(e["oid"])
        rows = await conn.fetch(
            "SELECT id, user_id, side, type, price_ticks, frozen_asset, frozen_remaining, filled_lots, filled_quote, "
            "fee_paid, state, done_reason FROM orders WHERE id = ANY($1::bigint[]) AND market = $2",
            list(oids), self.symbol)
        # the columns above are _Order's fields in order (bigint columns arrive as int)
        orders = {r[0]: _Order(*r) for r in rows}
        missing = oids - orders.keys()
        if missing:
            raise ArithmeticInvariantError(f"engine events for orders the ledger does not know: {sorted(missing)[:5]}")
        command_rows = self._commands.segment(fresh, lambda oid: orders[oid].state)  # before states change
        trades: list[tuple[Any, ...]] = []
        deltas: list[Delta] = []
        symbol, base, quote = self.symbol, m.base, m.quote
        events_of = res.events

        for e in fresh:
            kind = e["e"]
            if kind == "trade":
                seq, price, qty, taker_side, ts_ms = e["seq"], e["price"], e["qty"], e["taker_side"], e["ts_ms"]
                buy, sell = (orders[e["taker"]], orders[e["maker"]]) if taker_side == "buy" else (
                    orders[e["maker"]], orders[e["taker"]])
                eff = settle_trade(
                    m,
                    buy=OrderHold(buy.id, buy.user_id, buy.side, buy.type, buy.price_ticks, buy.frozen_remaining),
                    sell=OrderHold(sell.id, sell.user_id, sell.side, sell.type, sell.price_ticks,
                                   sell.frozen_remaining),
                    price_ticks=price, qty_lots=qty, taker_side=taker_side)
                deltas.extend(eff.deltas)
                quote_amount = eff.quote_amount
                buy.frozen_remaining -= eff.buy_consumed
                sell.frozen_remaining -= eff.sell_consumed
                buy.fee_paid += eff.buyer_fee
                sell.fee_paid += eff.seller_fee
                for o in (buy, sell):
                    o.filled_lots += qty
                    o.filled_quote += quote_amount
                    o.dirty = True
                trades.append((symbol, seq, buy.id, sell.id, buy.user_id, sell.user_id, taker_side, price,
                               qty, eff.base_amount, quote_amount, eff.buyer_fee, eff.seller_fee, ts_ms))
                for o, fee, fee_asset in ((buy, eff.buyer_fee, base), (sell, eff.seller_fee, quote)):
                    events_of[o.user_id].append({
                        "type": "fill", "market": symbol, "order_id": o.id, "side": o.side,
                        "liquidity": "taker" if o.side == taker_side else "maker", "seq": seq,
                        "price_ticks": price, "qty_lots": qty, "base_amount": eff.base_amount,
                        "quote_amount": quote_amount, "fee": fee, "fee_asset": fee_asset, "ts_ms": ts_ms})
            elif kind == "open":
                o = orders[e["oid"]]
                if o.state == "pending":
                    o.state = "open"
                    o.dirty = True
                events_of[o.user_id].append({"type": "order", "market": symbol, "order_id": o.id,
                                             "state": "open", "filled_lots": o.filled_lots, "ts_ms": e["ts_ms"]})
            elif kind == "done":
                o = orders[e["oid"]]
                deltas.extend(release_deltas(o.user_id, o.frozen_asset, o.frozen_remaining))
                o.frozen_remaining = 0
                o.state = FINAL_STATE[e["reason"]]
                o.done_reason = e["detail"] or e["reason"]
                o.dirty = True
                events_of[o.user_id].append({"type": "order", "market": symbol, "order_id": o.id,
                                             "state": o.state, "filled_lots": o.filled_lots, "ts_ms": e["ts_ms"]})
            else:  # cancel_reject
                events_of[e["user"]].append({"type": "cancel_rejected", "market": symbol, "order_id": e["oid"],
                                             "reason": e["reason"], "ts_ms": e["ts_ms"]})
        dirty = sorted((o for o in orders.values() if o.dirty), key=lambda o: o.id)
        # order states, journal (net change per user and asset), balances and the offset: one statement
        also = ["UPDATE settlement_offsets SET stream_id = $8, last_seq = $9 WHERE market = $7"]
        also_args: list[Any] = [self.symbol, last_id, fresh[-1]["seq"]]
        await insert_rows(conn, "trades", TRADE_COLUMNS, TRADE_TYPES, trades, also, also_args)
        if dirty:
            p = [f"${7 + len(also_args) + i}" for i in range(7)]
            also.append(
                "UPDATE orders o SET frozen_remaining = d.fr, filled_lots = d.fl, filled_quote = d.fq, "
                "fee_paid = d.fee, state = d.st, done_reason = d.dr, updated_at = now() "
                f"FROM unnest({p[0]}::bigint[], {p[1]}::bigint[], {p[2]}::bigint[], {p[3]}::bigint[], "
                f"{p[4]}::bigint[], {p[5]}::text[], {p[6]}::text[]) AS d(id, fr, fl, fq, fee, st, dr) "
                "WHERE o.id = d.id")
            also_args += [[o.id for o in dirty], [o.frozen_remaining for o in dirty], [o.filled_lots for o in dirty],
                          [o.filled_quote for o in dirty], [o.fee_paid for o in dirty], [o.state for o in dirty],
                          [o.done_reason for o in dirty]]
        command_sql, command_args = self._commands.statement(command_rows, 7 + len(also_args))
        also.append(command_sql)
        also_args += command_args
        res.balances = await upsert_journal_and(conn, aggregate(deltas), "settle", fresh[-1]["seq"], tuple(also),
                                                tuple(also_args))
        res.applied = len(fresh)
        return res
