"""The intake consumer of one user shard: `intake{k}` -> freeze, record -> `match:in{M}`.

One loop: XREAD a batch of request entries after the stored offset; ONE read statement takes
the shard's offset row, the order ids the batch may use, the users' balance rows (unlocked; the
write is guarded, see `process`) and the orders the batch names; dedupe client_order_id,
validate, freeze; ONE write statement inserts the orders and cancels, journals the batch's net
change per (user, asset) (kind `intake`, ref = the batch's last iid), upserts balances (rows in
sorted lock order) and moves the stream offset and the last intake id, only from where the read
saw them. A small batch's two statements run outside a transaction block (the write commits on
its own, all or nothing); a big one COPYs its orders in a transaction with the write, and a
batch holding a withdrawal runs in one transaction that locks the offset row. Most batches need
no read statement: what the intake remembers of its users' balances, its orders and its offset
(ledger/intake_cache.py) serves instead, and a remembered fact in doubt sends the batch to the
read before anything is written. Then it XADDs
the accepted commands to each market's `match:in{M}` (one batch per market) and publishes the
replies. Every forwarded command carries `shard` and a per-shard increasing `iid`, so a
re-send is dropped by the engine's watermark. On (re)start the consumer re-sends its last
committed batch and re-forwards every live order (and cancel) above the engine's
watermark `wm:<shard>` of each market, so a Redis that lost recent entries strands nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg.exceptions as asyncpg_errors
import msgspec

from ledger.arithmetic import (
    Delta,
    add_deltas,
    add_freeze,
    order_freeze,
    order_notional,
    withdrawal_hold_deltas,
)
from ledger.consumer_loop import RecoveringLoop, StreamTrimmer
from ledger.errors import (
    BalanceMovedError,
    InvalidAmountError,
    LedgerError,
    OffsetMovedError,
    RememberedStateError,
)
from ledger.intake_cache import ORDERS_MISSING, BatchRead, IntakeCache, Known
from ledger.intake_protocol import (
    BATCH_FIELD,
    CancelAllRequest,
    CancelRequest,
    PlaceOrderRequest,
    Reply,
    Request,
    WithdrawRequest,
    decode_batch,
    decode_requests,
    encode_reply,
    encode_user_events,
    intake_stream,
    user_events_channel,
)
from ledger.markets import Market, decimal_to_units, price_to_ticks, qty_to_lots, quote_to_funds
from ledger.online import OnlineUsers
from ledger.order_feed import NewOrder, encode_entry
from ledger.recovery import forward_guarded, guarded_forward_script, refeed_lost_prefixes
from ledger.redis_packed import evalsha
from ledger.repo import INLINE_ROWS, insert_rows, load_markets, upsert_journal_select
from matcher import keys
from matcher.protocol import BATCH_FIELD as MATCH_FIELD
from matcher.protocol import CancelOrder, Command, PlaceOrder

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger("ledger.intake")

ORDER_COLUMNS = (
    "id", "user_id", "market", "client_order_id", "side", "type", "tif", "post_only", "stp", "price_ticks",
    "qty_lots", "funds_notional", "frozen_asset", "frozen_total", "frozen_remaining", "state", "shard", "iid", "ts_ms",
)
ORDER_TYPES = ("bigint", "bigint", "text", "text", "text", "text", "text", "boolean", "text", "bigint", "bigint",
               "bigint", "text", "bigint", "bigint", "text", "int", "bigint", "bigint")
CANCEL_COLUMNS = ("shard", "iid", "market", "order_id", "user_id", "ts_ms")
CANCEL_TYPES = ("int", "bigint", "text", "bigint", "bigint", "bigint")
LIVE_STATES = ("pending", "open")
NEGATIVE_REASON = "a balance of this user is negative after a deposit reversal; cover it before trading or withdrawing"


@dataclass(frozen=True, slots=True)
class Asset:
    code: str
    chain: str
    network: str
    ledger_decimals: int
    withdrawal_fee: int
    min_withdrawal: int


class PlaceCommand(msgspec.Struct, frozen=True, gc=False):
    """`matcher.protocol.PlaceOrder` as the intake builds it for every accepted order: the same
    fields in the same order, so it encodes to the same map (a test checks both), at a tenth of
    the construction cost of the frozen dataclass."""

    oid: int
    user: int
    side: str
    type: str
    price: int | None
    qty: int | None
    funds: int | None
    tif: str
    post_only: bool
    stp: str
    shard: int
    iid: int
    ts_ms: int
    t: str = "place"


Forward = Command | PlaceCommand


_IID_KEYS = ("orders_shard_iid_key", "cancel_requests_pkey")  # the unique keys of the commands' intake ids
_COID_KEY = "orders_user_id_client_order_id_key"
# the markets' settled seqs, read by the batch's write for the forward's guard (see `_forward_new`)
_SETTLED_SQL = "SELECT market, last_seq FROM settlement_offsets"
# users map to intake shards by user_id % shards (ledger/service.py)
_PRELOAD_SQL = """
WITH u AS (SELECT id FROM users WHERE id % $1 = $2 ORDER BY id DESC LIMIT $3)
SELECT u.id, b.asset, b.available, b.frozen, (SELECT n FROM balance_lowerings) AS n
  FROM u LEFT JOIN balances b ON b.user_id = u.id
"""
PRELOAD_USERS = 200_000


def _named_orders_sql(ids: str, users: str, coids: str) -> str:
    """The orders named by id (`ids`) or by (user, client order id) (`users`, `coids`): parameter
    placeholders."""
    return (f"SELECT id, user_id, market, client_order_id, state FROM orders WHERE id = ANY({ids}::bigint[]) "
            f"UNION SELECT o.id, o.user_id, o.market, o.client_order_id, o.state "
            f"FROM unnest({users}::bigint[], {coids}::text[]) AS n(u, c) "
            f"JOIN orders o ON o.user_id = n.u AND o.client_order_id = n.c")


# the orders a batch's cancels name that the intake does not remember
_ORDERS_SQL = _named_orders_sql("$1", "$2", "$3")
_IDS_SQL = "SELECT ARRAY(SELECT nextval('order_ids') FROM generate_series(1, $1))"

# $1 shard, $2 users, $3 order ids named, $4/$5 (user, client order id) pairs named, $6 users
# cancelling all. Balance rows locked (locked mode) in (user, asset) order.
_READ_SQL = """
SELECT o.stream_id, o.last_iid, o.batch_first_iid,
       ARRAY(SELECT id FROM users WHERE id = ANY($2::bigint[])) AS users,
       b.bu, b.ba, b.bav, b.bfr, k.kid, k.ku, k.km, k.kc, k.ks,
       (SELECT n FROM balance_lowerings) AS lowerings
  FROM intake_offsets o
 CROSS JOIN LATERAL (
       SELECT array_agg(user_id) AS bu, array_agg(asset) AS ba, array_agg(available) AS bav,
              array_agg(frozen) AS bfr
         FROM (SELECT user_id, asset, available, frozen FROM balances WHERE user_id = ANY($2::bigint[])
                ORDER BY user_id, asset{lock_balances}) l) b
 CROSS JOIN LATERAL (
       SELECT array_agg(id) AS kid, array_agg(user_id) AS ku, array_agg(market) AS km,
              array_agg(client_order_id) AS kc, array_agg(state) AS ks
         FROM ({named}
               UNION
               SELECT id, user_id, market, client_order_id, state FROM orders
                WHERE user_id = ANY($6::bigint[]) AND state IN ('pending', 'open')) n) k
 WHERE o.shard = $1{lock_offset}
""".replace("{named}", _named_orders_sql("$3", "$4", "$5"))


@dataclass
class BatchResult:
    forwards: dict[str, list[Forward]] = field(default_factory=lambda: defaultdict(list))
    replies: list[tuple[str, Reply]] = field(default_factory=list)
    balances: list[tuple[int, str, int, int]] = field(default_factory=list)
    skipped: bool = False
    first_iid: int | None = None  # the batch's first intake id (None: it used none)
    settled: dict[str, int] = field(default_factory=dict)  # market -> last settled seq, read by the write
    # market -> the accepted orders' settlement fields, for the new-order feed (ledger/order_feed.py)
    new_orders: dict[str, list[NewOrder]] = field(default_factory=lambda: defaultdict(list))


_ENCODER = msgspec.msgpack.Encoder()


def encode_commands(cmds: Sequence[Forward]) -> bytes:
    """The same bytes as `matcher.protocol.encode_batch(cmds)` (a test checks it): msgspec
    writes a dataclass or Struct as the map of its fields in order, as `asdict` + msgpack did,
    without building the dicts."""
    return _ENCODER.encode(cmds)


def _remember(cache: dict[str, int], text: str, value: int) -> int:
    """Store a parsed price or quantity (bounded: a flood of distinct strings clears it)."""
    if len(cache) >= _GRID_CACHE_MAX:
        cache.clear()
    cache[text] = value
    return value


_GRID_CACHE_MAX = 100_000


# PUBLISH of many (channel, message) pairs in one command: one reply to parse instead of one
# per message (the per-command reply handling of a redis-py pipeline dominated publishing).
# Channels are not keys (PUBLISH reaches every node of a cluster), so this is cluster-safe.
_PUBLISH_MANY = """
for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return #ARGV / 2
"""
_PUBLISH_CHUNK = 2000  # messages per script call (bounds how long one call holds Redis)


def publish_script(redis: Redis) -> AsyncScript:
    return redis.register_script(_PUBLISH_MANY)


async def publish_many(script: AsyncScript, messages: list[tuple[str, bytes]]) -> None:
    """Publish `messages` in order (so each channel's order is kept) in few round trips."""
    for i in range(0, len(messages), _PUBLISH_CHUNK):
        args: list[Any] = []
        for channel, data in messages[i:i + _PUBLISH_CHUNK]:
            args += (channel, data)
        await evalsha(script, args)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ReadAhead:
    """At most one read of a consumer's NEXT batch in flight, started when a full batch's
    transaction starts (the consumer is behind), so reading and decoding overlap the database's
    work; a consumer that keeps up does not read ahead (an extra read per small batch cost the
    order path latency). Its result is used only if the
    consumer's offset is then exactly where the read started (the batch committed); anything
    else (an error, a restart, a skipped batch's reload) drops it, and an empty result is not
    trusted either (the caller reads again, blocking as it asked)."""

    def __init__(self) -> None:
        self._from = ""
        self._task: asyncio.Task[Any] | None = None

    def start(self, from_id: str, coro: Any) -> None:
        self.drop()
        self._from, self._task = from_id, asyncio.ensure_future(coro)
        self._task.add_done_callback(_retrieve)  # an unused failed read is not logged at exit

    def drop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def take(self, from_id: str) -> Any:
        task, self._task = self._task, None
        if task is None:
            return None
        if self._from != from_id:
            self._task = task
            self.drop()
            return None
        return await task


def stream_id_key(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


# A batch this big (or one that filled its XREAD) finds the intake behind: the next batch is read,
# and this one's forward sent, while the next is decided and written.
BEHIND_REQUESTS = 1000


class IntakeConsumer(RecoveringLoop):
    """Consumes `intake{shard}`; one instance per shard (the offset row lock fences a second)."""

    def __init__(self, pool: asyncpg.Pool, redis: Redis, *, shard: int, batch_size: int = 5000,
                 block_ms: int = 500, shards: int | None = None) -> None:
        self.pool = pool
        self.redis = redis
        self.shard = shard
        self.shards = shards  # known (the service's consumers): start() preloads the shard's users
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.errors = 0  # recovered failures since start (tests assert on it)
        self._cache = IntakeCache()
        self.remembered = 0  # batches decided without a read (tests and benchmarks read these)
        self.doubted = 0  # batches decided on memory, then again on a read
        self.looked_up = 0  # batches decided on memory after looking up orders their cancels name
        self._guard_script = guarded_forward_script(redis)
        self._publishing: asyncio.Task[None] | None = None
        self._forwarding: asyncio.Task[None] | None = None  # a behind consumer's forward in flight
        self._forwarding_from: int | None = None  # its batch's first intake id
        self._publish_script = publish_script(redis)
        self._online = OnlineUsers(redis)
        self._ahead = ReadAhead()
        self.stream = intake_stream(shard)
        self._trimmer = StreamTrimmer(redis, self.stream)
        self.last_id = "0-0"
        self.markets: dict[str, Market] = {}
        # symbol -> (market, its parsed prices, its parsed quantities): the order flow repeats a
        # few price and size strings; rebuilt (emptied) whenever the markets are reloaded
        self._specs: dict[str, tuple[Market, dict[str, int], dict[str, int]]] = {}
        self.assets: dict[str, Asset] = {}

    # ---- start and recovery -------------------------------------------------------------

    async def start(self) -> None:
        """Load offset, markets and assets; re-send the last batch; re-forward above watermarks."""
        self._ahead.drop()
        self._cache = IntakeCache()  # a restart follows a failure: remember nothing from before
        task, self._forwarding, self._forwarding_from = self._forwarding, None, None
        if task is not None:  # whatever it did, the re-send below covers its batch
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        async with self.pool.acquire() as conn:
            await conn.execute("INSERT INTO intake_offsets (shard) VALUES ($1) ON CONFLICT DO NOTHING", self.shard)
            row = await conn.fetchrow("SELECT * FROM intake_offsets WHERE shard = $1", self.shard)
            await self._load_reference(conn)
            assert row is not None
            if self.shards is not None:
                await self._preload(conn, (row["stream_id"], int(row["last_iid"]), int(row["batch_first_iid"])))
        self.last_id = row["stream_id"]
        # before forwarding anything: if Redis lost engine output that settlement applied, put the
        # commands behind it back in their original order (ledger/recovery.py)
        await refeed_lost_prefixes(self.pool, self.redis, self.markets)
        if row["last_iid"] >= row["batch_first_iid"]:
            await self.resend_range(row["batch_first_iid"], row["last_iid"])
        await self.reforward_above_watermarks()

    async def _preload(self, conn: asyncpg.Connection, offset: tuple[str, int, int]) -> None:
        """Remember the shard's users and their balance rows (at most PRELOAD_USERS users; the
        others are learnt from the batches' reads), read with the reversal count in one statement."""
        rows = await conn.fetch(_PRELOAD_SQL, self.shards, self.shard, PRELOAD_USERS)
        lowerings = int(rows[0]["n"]) if rows else int(await conn.fetchval("SELECT n FROM balance_lowerings"))
        self._cache.preload(lowerings, [(r["id"], r["asset"], r["available"], r["frozen"]) for r in rows], offset)
        log.info("intake %d: remembered %d user(s) of the shard at start", self.shard, len(self._cache.balances))

    async def _load_reference(self, conn: asyncpg.Connection) -> None:
        self.markets = await load_markets(conn)
        self._specs = {symbol: (m, {}, {}) for symbol, m in self.markets.items()}
        rows = await conn.fetch(
            "SELECT code, chain, network, ledger_decimals, withdrawal_fee, min_withdrawal FROM assets")
        self.assets = {r["code"]: Asset(r["code"], r["chain"], r["network"], r["ledger_decimals"],
                                        int(r["withdrawal_fee"]), int(r["min_withdrawal"])) for r in rows}

    async def _commands(self, conn: asyncpg.Connection, where: str, args: list[Any],
                        live_only: bool) -> dict[str, list[tuple[int, Command]]]:
        live = "AND o.state IN ('pending', 'open')" if live_only else ""
        orders = await conn.fetch(
            f"SELECT o.* FROM orders o WHERE o.shard = $1 AND {where} {live} ORDER BY o.iid", self.shard, *args)
        cancels = await conn.fetch(
            f"SELECT o.market, c.order_id, c.user_id, c.iid, c.ts_ms FROM cancel_requests c "
            f"JOIN orders o ON o.id = c.order_id WHERE c.shard = $1 AND "
            f"{where.replace('o.iid', 'c.iid').replace('o.market', 'c.market')} {live} ORDER BY c.iid",
            self.shard, *args)
        out: dict[str, list[tuple[int, Command]]] = defaultdict(list)
        for o in orders:
            qty = o["qty_lots"]
            if live_only and qty is not None and o["type"] == "limit":
                qty = qty - o["filled_lots"]  # an order the engine lost re-enters with what is left
            out[o["market"]].append((o["iid"], PlaceOrder(
                o["id"], o["user_id"], o["side"], o["type"], o["price_ticks"], qty, o["funds_notional"], o["tif"],
                o["post_only"], o["stp"], self.shard, o["iid"], o["ts_ms"])))
        for c in cancels:
            out[c["market"]].append((c["iid"], CancelOrder(c["order_id"], c["user_id"], self.shard, c["iid"],
                                                            c["ts_ms"])))
        for items in out.values():
            items.sort(key=lambda p: p[0])
        return out

    async def resend_range(self, first_iid: int, last_iid: int) -> int:
        """Re-send the commands with iid in [first_iid, last_iid] (the last committed batch)."""
        async with self.pool.acquire() as conn:
            cmds = await self._commands(conn, "o.iid BETWEEN $2 AND $3", [first_iid, last_iid], live_only=False)
        await self._forward({m: [c for _, c in items] for m, items in cmds.items()})
        return sum(len(v) for v in cmds.values())

    async def reforward_above_watermarks(self) -> int:
        """Re-forward every live order and cancel of this shard above each engine's watermark."""
        sent = 0
        for symbol in sorted(self.markets):
            raw = await self.redis.hget(keys.checkpoint(symbol), keys.watermark_field(self.shard))  # type: ignore[misc]
            wm = int(raw) if raw is not None else 0
            async with self.pool.acquire() as conn:
                cmds = await self._commands(conn, "o.market = $2 AND o.iid > $3", [symbol, wm], live_only=True)
            items = cmds.get(symbol, [])
            if items:
                await self._forward({symbol: [c for _, c in items]})
                sent += len(items)
        if sent:
            log.info("intake %d: re-forwarded %d command(s) above the engine watermarks", self.shard, sent)
        return sent

    # ---- the loop ----------------------------------------------------------------------

    async def step(self, block_ms: int | None = None) -> int:
        """Read one batch, process it in one transaction, forward, reply. Returns entries read."""
        block = self.block_ms if block_ms is None else block_ms  # <= 0: do not wait (never BLOCK 0)
        batch = await self._ahead.take(self.last_id) or await self._fetch(self.last_id, block if block > 0 else None)
        if not batch:
            await self._finish_forward()
            return 0
        n_entries, last_id, requests = batch
        behind = n_entries >= self.batch_size or len(requests) >= BEHIND_REQUESTS
        if behind:  # read the next batch while this one commits
            self._ahead.start(last_id, self._fetch(last_id, None))
        try:
            try:
                result = await self._decide(requests, last_id)
            except BalanceMovedError as exc:  # a deposit reversal raced the batch: decide on locked rows
                log.info("intake %d: %s; computing the batch again on locked balance rows", self.shard, exc)
                self._cache.forget_balances()
                async with self.pool.acquire() as conn, conn.transaction():
                    result = await self.process(conn, requests, last_id, locked=True, in_transaction=True)
        except BaseException:
            self._ahead.drop()
            raise
        self.last_id = last_id
        await self._finish_forward()  # the previous batch's first: the engine takes a shard's ids in order
        if not result.skipped:
            # the engine's input and the API's replies go out side by side (two connections)
            if behind and result.first_iid is not None:
                # behind: this forward overlaps the next batch's read and transaction, which then
                # records this batch's first id as where a restart re-sends from
                self._forwarding = asyncio.create_task(self._send(result))
                self._forwarding_from = result.first_iid
                self._forwarding.add_done_callback(_retrieve)
            else:
                await self._send(result)
        if self._trimmer.due():
            await self._trimmer.trim(last_id)  # committed: never read from the stream again
        return n_entries

    async def _decide(self, requests: list[Request], last_id: str) -> BatchResult:
        """The batch decided on what the intake remembers when it can (one statement), else, or
        when a remembered fact is in doubt, on a read (two statements)."""
        async with self.pool.acquire() as conn:
            if any(isinstance(r, WithdrawRequest) for r in requests):  # a withdrawal writes as it goes
                async with conn.transaction():
                    return await self.process(conn, requests, last_id, in_transaction=True)
            try:
                return await self.process(conn, requests, last_id, remembered=True)
            except RememberedStateError as exc:
                self.doubted += 1
                if exc.lowered:
                    self._cache.forget_balances()
                log.debug("intake %d: %s; deciding the batch again on a read", self.shard, exc)
                return await self.process(conn, requests, last_id)

    async def _fetch(self, from_id: str, block: int | None) -> tuple[int, str, list[Request]] | None:
        """XREAD the entries after `from_id` and decode them: (entries, last entry id, requests)."""
        resp: Any = await self.redis.xread({self.stream: from_id}, count=self.batch_size, block=block)
        if not resp:
            return None
        entries: list[tuple[bytes, dict[bytes, bytes]]] = resp[0][1]
        requests: list[Request] = []
        for _eid, fields in entries:
            raw = fields.get(BATCH_FIELD, b"")
            try:
                requests += decode_batch(raw)  # every item good: the common case
            except msgspec.DecodeError:
                for item in decode_requests(raw):  # keep the good items, log the bad ones
                    if isinstance(item, LedgerError):
                        log.warning("intake %d: skipped an undecodable request: %s", self.shard, item)
                    else:
                        requests.append(item)
        last = entries[-1][0]
        return len(entries), last.decode() if isinstance(last, bytes) else str(last), requests

    @property
    def label(self) -> str:
        return f"intake {self.shard}"

    def summary(self) -> str:
        misses = ", ".join(f"{n} {why}" for why, n in self._cache.misses.most_common() if n) or "none"
        return (f": {self.remembered} batch(es) decided on what it remembered ({self.looked_up} after looking up "
                f"orders their cancels name), {self.doubted} of them again on a read; other reads for: {misses}; "
                f"{self.errors} recovered failure(s)")

    async def _forward_new(self, forwards: Mapping[str, Sequence[Forward]], settled: dict[str, int],
                           new_orders: Mapping[str, Sequence[NewOrder]]) -> None:
        """Forward a new batch, refused (RedisLossError -> recovery) while Redis has lost engine
        output that settlement applied (`settled`: the markets' last settled seqs): a running
        consumer never puts new commands in front of the re-feed, even when redis-py reconnected
        to the restarted Redis without an error. `settled` is read by the batch's write statement
        (no round trip of its own), so it is older than this check by the batch's own time, some
        milliseconds: output settled in that window and then lost would need Redis to crash and
        come back from its AOF within it, which takes far longer (the same holds, with a shorter
        window, for any read made before the XADD). The batch's new orders go to the new-order
        feed just before their commands (ledger/order_feed.py); a re-send writes no entries."""
        payloads = {symbol: [encode_commands(cmds[i:i + 5000]) for i in range(0, len(cmds), 5000)]
                    for symbol, cmds in forwards.items() if cmds}
        if not payloads:
            return
        feed = {symbol: encode_entry(self.shard, rows) for symbol, rows in new_orders.items() if rows}
        await forward_guarded(self._guard_script, self.redis, settled, payloads, feed)

    async def _forward(self, forwards: Mapping[str, Sequence[Forward]]) -> None:
        if not any(forwards.values()):
            return
        pipe = self.redis.pipeline(transaction=False)
        for symbol, cmds in forwards.items():
            for i in range(0, len(cmds), 5000):
                pipe.xadd(keys.match_in(symbol), {MATCH_FIELD: encode_commands(cmds[i:i + 5000])})
        await pipe.execute()

    async def _publish(self, result: BatchResult) -> None:
        """Replies now (the API is waiting); balance events in the background, overlapping the
        next batch, one batch in flight so each user's events stay in order."""
        await publish_many(self._publish_script, [(ch, encode_reply(r)) for ch, r in result.replies if ch])
        await self._flush_publishing()
        if result.balances:
            self._publishing = asyncio.create_task(self._publish_balances(result.balances))

    async def _publish_balances(self, balances: list[tuple[int, str, int, int]]) -> None:
        """The batch's new balances as `balance` events, to the users who listen (ledger/online.py)."""
        listening = await self._online.among({user for user, _a, _av, _fr in balances})
        per_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for user, asset, available, frozen in balances:
            if user in listening:
                per_user[user].append({"type": "balance", "asset": asset, "available": available, "frozen": frozen})
        await publish_many(self._publish_script, [(user_events_channel(user), encode_user_events(user, events))
                                        for user, events in per_user.items()])

    async def _send(self, result: BatchResult) -> None:
        """Forward a committed batch to the engine and publish its replies, side by side."""
        await asyncio.gather(self._forward_new(result.forwards, result.settled, result.new_orders),
                             self._publish(result))

    async def _finish_forward(self) -> None:
        """Wait for the forward (and replies) of the batch before; raise its failure (recovery
        then re-sends from the stored batch_first_iid, which covers that batch)."""
        task, self._forwarding = self._forwarding, None
        if task is not None:
            await task
            self._forwarding_from = None

    async def flush_events(self) -> None:
        """Finish the previous batch's forward (a failure is logged: the next start re-sends it) and
        wait for its balance events (best effort: errors are logged)."""
        try:
            await self._finish_forward()
        except Exception as exc:
            log.warning("intake %d: the last forward did not finish: %s", self.shard, exc)
        await self._flush_publishing()

    # ---- the transaction ---------------------------------------------------------------

    async def process(self, conn: asyncpg.Connection, requests: list[Request], last_id: str, *,
                      locked: bool = False, in_transaction: bool = False, remembered: bool = False) -> BatchResult:
        """Apply one batch (see module docstring) in two statements: one read, one write; with
        `remembered`, in the write alone when what the intake remembers serves instead of the read
        (ledger/intake_cache.py; RememberedStateError when a remembered fact is in doubt).

        The read takes the offset row, order ids, the users' balance rows and the orders the
        batch names; the write stores orders, cancels, journal, balances and the new offset.
        Without `in_transaction` each runs on its own (a big batch's COPY and write share a
        transaction): the write is refused (`OffsetMovedError`, nothing written) unless the
        offset row still holds what the read saw, so a second consumer of the shard cannot
        commit a batch twice; with it (the caller's transaction: a batch holding a withdrawal,
        which writes as it goes) the read locks the offset row.

        The users' balance rows are read WITHOUT a lock (`locked=False`) and the batch's write
        is guarded: a row whose available would go below zero refuses the whole statement
        (BalanceMovedError, only after a concurrent deposit reversal) and the caller runs the
        batch again in a transaction with `locked=True` (rows locked FOR UPDATE when read). So
        settlement and deposit credits of the same users never wait for this batch's
        validation work, only for its write."""
        res = BatchResult()
        user_set: set[int] = set()
        n_places = 0
        unknown_market = False
        specs = self._specs
        for r in requests:
            user_set.add(r.user)
            if isinstance(r, PlaceOrderRequest):
                n_places += 1
                if r.market not in specs:
                    unknown_market = True
        cache = self._cache
        if cache.ids_left < n_places:  # order ids come from blocks drawn ahead: increasing in the shard
            cache.add_ids(await conn.fetchval(_IDS_SQL, max(n_places, 4 * self.batch_size)))
        off = await self._remembered(conn, requests, user_set, n_places) if remembered else None
        if off is None:
            off = await self._read(conn, requests, sorted(user_set), lock_offset=in_transaction,
                                   lock_balances=locked)
            off.oids = cache.next_ids(n_places)
        else:
            self.remembered += 1
        if stream_id_key(off.stream_id) >= stream_id_key(last_id):
            res.skipped = True  # another run committed this batch already
            self._cache.offset = None  # and moved the offset: the next batch reads it
            return res
        if unknown_market:
            await self._load_reference(conn)
            specs = self._specs
        users, bal, known = off.users, off.balances, off.known
        by_id = {k.id: k for k in known}
        by_coid = {(k.user_id, k.client_order_id): k for k in known if k.client_order_id is not None}
        oid_iter = iter(off.oids)
        iid = off.last_iid
        first_iid = iid + 1
        shard = self.shard
        orders: list[tuple[Any, ...]] = []
        cancels: list[tuple[int, int, str, int, int, int]] = []
        net: dict[tuple[int, str], list[int]] = {}  # the batch's net change per (user, asset)
        forwards, replies, new_orders = res.forwards, res.replies, res.new_orders

        # users with a negative balance (left by a reversal); nothing done here makes one
        negative_users = {u for (u, _a), v in bal.items() if v[0] < 0}
        doubt = off.from_cache  # a reject that depends on a remembered balance is decided on a read
        placed: list[Known] = []

        def negative(user: int) -> bool:
            return user in negative_users

        def reject(r: Request, kind: str, reason: str, **kw: Any) -> None:
            if r.reply_to:
                replies.append((r.reply_to, Reply(r.rid, False, kind, "rejected", reason=reason, **kw)))

        def apply(ds: tuple[Delta, ...], kind: str, ref: int) -> None:
            add_deltas(bal, ds)
            add_deltas(net, ds)

        for r in requests:
            user = r.user
            if user not in users:
                reject(r, r.t, f"unknown user {user}")
                continue
            if isinstance(r, PlaceOrderRequest):
                coid = r.client_order_id
                if coid is not None:
                    orig = by_coid.get((user, coid))
                    if orig is not None:
                        replies.append((r.reply_to, Reply(r.rid, True, "place", orig.state, order_id=orig.id,
                                                          client_order_id=coid, duplicate=True)))
                        continue
                spec = specs.get(r.market)
                if spec is None:
                    reject(r, "place", f"unknown market {r.market!r}", client_order_id=coid)
                    continue
                market, prices, qtys = spec
                typ, price_text, qty_text, funds_text = r.type, r.price, r.qty, r.funds
                try:
                    price = qty = funds = None
                    if typ == "limit" and price_text is not None:
                        price = prices.get(price_text)
                        if price is None:
                            price = _remember(prices, price_text, price_to_ticks(market, price_text))
                    if qty_text is not None:
                        qty = qtys.get(qty_text)
                        if qty is None:
                            qty = _remember(qtys, qty_text, qty_to_lots(market, qty_text))
                    if funds_text is not None:
                        funds = quote_to_funds(market, funds_text, self.assets[market.quote].ledger_decimals)
                    if typ == "limit" and price is None:
                        raise InvalidAmountError("a limit order needs a price")
                    if typ == "market" and price_text is not None:
                        raise InvalidAmountError("a market order takes no price")
                    if typ not in ("limit", "market") or r.tif not in ("GTC", "IOC", "FOK"):
                        raise InvalidAmountError(f"unknown order type {typ!r} / time in force {r.tif!r}")
                    frz = order_freeze(market, side=r.side, type=typ, price_ticks=price, qty_lots=qty, funds=funds)
                except InvalidAmountError as exc:
                    reject(r, "place", str(exc), client_order_id=coid)
                    continue
                notional = order_notional(market, side=r.side, type=typ, price_ticks=price, qty_lots=qty,
                                          funds=funds)
                if notional is not None and notional < market.min_notional:
                    reject(r, "place", f"order value {notional} is below the minimum notional {market.min_notional} "
                                       f"{market.quote} units", client_order_id=coid)
                    continue
                if user in negative_users:
                    if doubt:
                        raise RememberedStateError(f"user {user} has a negative remembered balance")
                    reject(r, "place", NEGATIVE_REASON, client_order_id=coid)
                    continue
                frozen_asset, amount = frz
                cur = bal.get((user, frozen_asset))
                have = 0 if cur is None else cur[0]
                if amount > have:
                    if doubt:
                        raise RememberedStateError(f"user {user} has less {frozen_asset} than needed, as remembered")
                    reject(r, "place", f"insufficient available {frozen_asset}: need {amount}, have {have}",
                           client_order_id=coid)
                    continue
                oid = next(oid_iter)
                iid += 1
                add_freeze(bal, user, frz)
                add_freeze(net, user, frz)
                symbol = market.symbol
                orders.append((oid, user, symbol, coid, r.side, typ, r.tif, r.post_only, r.stp, price, qty, funds,
                               frozen_asset, amount, amount, "pending", shard, iid, r.ts_ms))
                forwards[symbol].append(PlaceCommand(oid, user, r.side, typ, price, qty, funds, r.tif, r.post_only,
                                                     r.stp, shard, iid, r.ts_ms))
                new_orders[symbol].append((oid, user, r.side, typ, price, frozen_asset, amount))
                k = Known(oid, user, symbol, coid, "pending")
                placed.append(k)
                by_id[oid] = k
                if coid is not None:
                    by_coid[(user, coid)] = k
                if r.reply_to:
                    replies.append((r.reply_to, Reply(r.rid, True, "place", "pending", order_id=oid,
                                                      client_order_id=coid)))
            elif isinstance(r, CancelRequest):
                target = by_id.get(r.order_id) if r.order_id is not None else (
                    by_coid.get((r.user, r.client_order_id)) if r.client_order_id is not None else None)
                if target is None or target.user_id != r.user or target.market != r.market:
                    reject(r, "cancel", "unknown order", order_id=r.order_id, client_order_id=r.client_order_id)
                    continue
                if target.state not in LIVE_STATES:
                    reject(r, "cancel", f"order is already {target.state}", order_id=target.id)
                    continue
                iid += 1
                cancels.append((self.shard, iid, target.market, target.id, r.user, r.ts_ms))
                res.forwards[target.market].append(CancelOrder(target.id, r.user, self.shard, iid, r.ts_ms))
                res.replies.append((r.reply_to, Reply(r.rid, True, "cancel", "cancel_pending", order_id=target.id,
                                                      client_order_id=target.client_order_id)))
            elif isinstance(r, CancelAllRequest):
                live = [k for k in by_id.values() if k.user_id == r.user and k.state in LIVE_STATES
                        and (r.market is None or k.market == r.market)]
                for k in sorted(live, key=lambda k: k.id):
                    iid += 1
                    cancels.append((self.shard, iid, k.market, k.id, r.user, r.ts_ms))
                    res.forwards[k.market].append(CancelOrder(k.id, r.user, self.shard, iid, r.ts_ms))
                res.replies.append((r.reply_to, Reply(r.rid, True, "cancel_all", "cancel_pending", canceled=len(live))))
            elif isinstance(r, WithdrawRequest):
                await self._withdraw(conn, r, res, bal, negative, reject, apply)
        # orders, cancels, journal (net change per user and asset), balances and the offset: one
        # statement for a small batch (big ones COPY orders and cancels first)
        # batch_first_iid: where a restart re-sends from. This batch's first id, or the previous
        # batch's when that one's forward has not finished yet (see `step`): a restart re-sends both,
        # in iid order, so no command of the earlier batch arrives after one of this batch.
        res.first_iid = first_iid if iid >= first_iid else None
        resend_from = first_iid if iid >= first_iid else off.batch_first_iid
        if self._forwarding_from is not None:
            resend_from = min(resend_from, self._forwarding_from)
        # the offset moves only from where the read saw it (else nothing of the statement is written)
        # and, unless the batch's balance rows are locked, only if no reversal lowered a balance since
        # they were read (CF004: one whose user has no row in the batch could have gone negative)
        also = ["UPDATE intake_offsets SET stream_id = $6, last_iid = $7, batch_first_iid = $8 "
                "WHERE shard = $5 AND CASE WHEN stream_id = $9 THEN true "
                "ELSE ledger_refuse('CF002', 'the intake offset moved') = 0 END" + ("" if locked else
                " AND CASE WHEN (SELECT n FROM balance_lowerings) = $10 THEN true "
                "ELSE ledger_refuse('CF004', 'a balance was lowered since the batch''s balances were read') = 0 END")]
        also_args: list[Any] = [self.shard, last_id, iid, resend_from, off.stream_id] + ([] if locked else
                                                                                          [off.lowerings])
        one_statement = in_transaction or max(len(orders), len(cancels)) <= INLINE_ROWS
        try:
            async with contextlib.nullcontext() if one_statement else conn.transaction():  # COPY + write together
                await insert_rows(conn, "orders", ORDER_COLUMNS, ORDER_TYPES, orders, also, also_args)
                await insert_rows(conn, "cancel_requests", CANCEL_COLUMNS, CANCEL_TYPES, cancels, also, also_args)
                res.balances, settled = await self._write(conn, net, iid, also, also_args, guard=not locked)
        except asyncpg_errors.PostgresError as exc:
            if exc.sqlstate == "CF004":  # on memory: read again; after a read: decide on locked rows
                if off.from_cache:
                    raise RememberedStateError(str(exc), lowered=True) from exc
                raise BalanceMovedError(str(exc)) from exc
            if off.from_cache and getattr(exc, "constraint_name", None) == _COID_KEY:
                raise RememberedStateError(f"a client order id of the batch is taken ({exc})") from exc
            # the offset's guard, or the batch's intake ids already taken: another consumer of the
            # shard committed from the same offset (nothing of this batch was written)
            if exc.sqlstate == "CF002" or getattr(exc, "constraint_name", None) in _IID_KEYS:
                raise OffsetMovedError(f"intake {self.shard}: another consumer moved the shard's offset "
                                       f"({exc})") from exc
            raise
        res.settled = dict(settled)
        self._cache.committed(off, bal, res.balances, placed, len(placed), (last_id, iid, resend_from))
        return res

    async def _write(self, conn: asyncpg.Connection, net: dict[tuple[int, str], list[int]], iid: int,
                     also: list[str], also_args: list[Any], *,
                     guard: bool) -> tuple[list[tuple[int, str, int, int]], list[tuple[str, int]]]:
        """The batch's write statement (a seam for tests that race it): the new balance rows and
        the markets' settled seqs."""
        return await upsert_journal_select(conn, net, "intake", iid, tuple(also), tuple(also_args), guard=guard,
                                           select=_SETTLED_SQL)

    async def _remembered(self, conn: asyncpg.Connection, requests: list[Request], users: set[int],
                          n_places: int) -> BatchRead | None:
        """The batch's read from memory (topping up the order ids drawn ahead, and looking up the
        orders its cancels name that are not remembered: a small statement instead of the
        batch's read), or None."""
        cache = self._cache
        read = cache.serve(requests, users, n_places, self._specs)
        if read is None and cache.last_miss == ORDERS_MISSING:
            ids, pairs = cache.missing
            rows = await conn.fetch(_ORDERS_SQL, ids, [u for u, _c in pairs], [c for _u, c in pairs])
            found = [Known(r["id"], r["user_id"], r["market"], r["client_order_id"], r["state"]) for r in rows]
            cache.learn(found)
            by_id = {k.id for k in found}
            by_coid = {(k.user_id, k.client_order_id) for k in found}
            absent = frozenset([i for i in ids if i not in by_id] + [p for p in pairs if p not in by_coid])
            read = cache.serve(requests, users, n_places, self._specs, absent)
            if read is not None:
                cache.misses[ORDERS_MISSING] -= 1  # no read after all
                self.looked_up += 1
        return read

    async def _read(self, conn: asyncpg.Connection, requests: list[Request], user_ids: list[int], *,
                    lock_offset: bool, lock_balances: bool) -> BatchRead:
        """ONE statement: the offset row, which users exist, their balance rows, and the orders the
        batch names (by id, by client order id, and the live ones of cancel-all users). The batch's
        order ids come from the block drawn ahead (`IntakeCache.next_ids`)."""
        ids = [r.order_id for r in requests if isinstance(r, CancelRequest) and r.order_id is not None]
        coid_users, coids = [], []
        for r in requests:
            coid = r.client_order_id if isinstance(r, PlaceOrderRequest | CancelRequest) else None
            if coid is not None:
                coid_users.append(r.user)
                coids.append(coid)
        all_users = sorted({r.user for r in requests if isinstance(r, CancelAllRequest)})
        row = await conn.fetchrow(_READ_SQL.format(lock_balances=" FOR UPDATE" if lock_balances else "",
                                                   lock_offset=" FOR UPDATE OF o" if lock_offset else ""),
                                  self.shard, user_ids, ids, coid_users, coids, all_users)
        if row is None:
            raise LedgerError(f"intake {self.shard}: no offset row (start() creates it)")
        bal = {(u, a): [int(av), int(fr)] for u, a, av, fr in
               zip(row["bu"] or (), row["ba"] or (), row["bav"] or (), row["bfr"] or (), strict=True)}
        known = [Known(i, u, m, c, st) for i, u, m, c, st in
                 zip(row["kid"] or (), row["ku"] or (), row["km"] or (), row["kc"] or (), row["ks"] or (), strict=True)]
        return BatchRead(row["stream_id"], int(row["last_iid"]), int(row["batch_first_iid"]), [],
                         set(row["users"]), bal, known, int(row["lowerings"]))

    async def _withdraw(self, conn: asyncpg.Connection, r: WithdrawRequest, res: BatchResult,
                        bal: dict[tuple[int, str], list[int]], negative: Any, reject: Any, apply: Any) -> None:
        from wallet.addresses import validate_address
        from wallet.errors import WalletError

        prior = await conn.fetchrow("SELECT id, state FROM withdrawals WHERE request_id = $1", r.rid)
        if prior is not None:
            res.replies.append((r.reply_to, Reply(r.rid, True, "withdraw", prior["state"], duplicate=True,
                                                  withdrawal_id=prior["id"])))
            return
        asset = self.assets.get(r.asset)
        if asset is None:
            reject(r, "withdraw", f"unknown asset {r.asset!r}")
            return
        try:
            amount = decimal_to_units(r.amount, asset.ledger_decimals)
        except InvalidAmountError as exc:
            reject(r, "withdraw", str(exc))
            return
        if amount < asset.min_withdrawal or amount <= asset.withdrawal_fee:
            reject(r, "withdraw", f"amount is below the minimum withdrawal of {asset.min_withdrawal} units")
            return
        try:
            address = validate_address(r.address, asset.chain, asset.network)
        except WalletError as exc:
            reject(r, "withdraw", f"invalid address: {exc}")
            return
        if negative(r.user):
            reject(r, "withdraw", NEGATIVE_REASON)
            return
        have = bal.get((r.user, asset.code), [0, 0])[0]
        if amount > have:
            reject(r, "withdraw", f"insufficient available {asset.code}: need {amount}, have {have}")
            return
        wid = await conn.fetchval(
            "INSERT INTO withdrawals (user_id, asset, amount, fee, address, request_id) VALUES ($1,$2,$3,$4,$5,$6) "
            "RETURNING id", r.user, asset.code, amount, asset.withdrawal_fee, address, r.rid)
        apply(withdrawal_hold_deltas(r.user, asset.code, amount), "withdraw_hold", wid)
        res.replies.append((r.reply_to, Reply(r.rid, True, "withdraw", "held", withdrawal_id=wid)))
