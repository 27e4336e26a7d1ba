"""Recovery of the engine's input order after Redis lost output that settlement had applied.

The engine is deterministic in the ORDER of `match:in{M}`. Redis with `appendfsync everysec`
can come back from its AOF holding a consistent prefix that ends before events settlement
already applied: the engine checkpoint says seq C, PostgreSQL says settled seq S > C. The
intake shards each re-forward their own backlog, independently, so the cross-shard order of
the commands behind C+1..S would differ from the original and the regenerated events would
differ from the settled ones (settlement skips them by seq: nothing doubles, but ledger and
book diverge).

Every command yields at least one event and a command's events are contiguous, so the
commands behind C+1..S are the first ones after the checkpoint, in the order of the first seq
each produced. Two halves:

- `CommandLog` (settlement consumer of M): segments each settled batch into commands and
  records, in the batch's own transaction, `(first_seq, is_cancel, oid)` per command, as one
  row of `settled_command_runs` per batch (migration 0107; the view `settled_commands` shows one
  row per command) (one extra data-modifying CTE in the batch's single statement, no extra round trip).
- `refeed_lost_prefixes` (every intake consumer, at (re)start, BEFORE it forwards anything):
  per market, reads S (PostgreSQL) then the checkpoint (Redis). S > C happens only when Redis
  lost data (the checkpoint is written with the events it describes, so settlement can never
  read past it otherwise; reading S first rules out a false positive from a race). Then it
  XADDs the commands with first_seq in (C, S], rebuilt exactly as they were forwarded (the
  original qty, the original shard/iid), in first_seq order. Whatever else is in or comes to
  `match:in{M}` is harmless: commands still in `match:in` after the checkpoint are the
  original prefix (the AOF cut is a prefix) and the refed copies of them are dropped by the
  engine's per-shard watermark, as are the intake's own re-forwards that follow; several
  intake consumers refeeding concurrently also only produce duplicates the watermark drops,
  because each feed is the same total order and iids grow along it per shard.

A cancel's intake id is not in the events: it is resolved at recovery time as the first
cancel request of that order whose iid is above the shard's watermark so far (starting from
the checkpoint's `wm:<shard>`, advanced by each command in turn), which is the one the
engine took, since the engine takes each shard's commands in iid order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerError
from ledger.events import EvCancelReject, EvDone, EvOpen, EvTrade, SettleEvent
from ledger.order_feed import FIELD as FEED_FIELD
from ledger.order_feed import MAXLEN as FEED_MAXLEN
from ledger.order_feed import feed_key
from matcher import keys
from matcher.protocol import BATCH_FIELD, CancelOrder, Command, PlaceOrder, encode_batch

if TYPE_CHECKING:
    import asyncpg
    from redis.asyncio import Redis

log = logging.getLogger("ledger.recovery")

STP_DETAIL = "self-trade prevention"
_FEED_CHUNK = 5000

CommandRow = tuple[int, bool, int | None]  # (first_seq, is_cancel, oid)


class CommandLog:
    """The settlement side: which command each settled event run came from.

    Within a place command of taker T every event is a trade with taker T, a done of a maker
    (filled, or canceled by self-trade prevention), and the last one is T's own `open` or
    `done`. A cancel command is one event: `done` canceled with no detail, or `cancel_reject`.
    The only ambiguous first event is a `done` canceled by self-trade prevention: a maker's
    (the order was resting: the command goes on until its taker's last event) or the taker's
    own (cancel_taker before any fill: a one-event command). A command can span settlement
    batches (an engine commit of more than `out_chunk` events), so the command in progress is
    kept here and reloaded from the table at start."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.taker: int | None = None  # the place command in progress
        self.open_start: int | None = None  # a command begun by a maker's STP cancel, taker unknown
        self.placeholder: int | None = None  # open_start's row, already recorded with oid NULL
        self.completed: frozenset[int] = frozenset()  # rows of the last segment() that fill a placeholder

    async def load(self, conn: asyncpg.Connection) -> None:
        row = await conn.fetchrow(
            "SELECT c.first_seq, c.is_cancel <> 0 AS is_cancel, coalesce(c.oid, t.oid) AS oid, o.state "
            "FROM (SELECT market, cmds FROM settled_command_runs WHERE market = $1 ORDER BY last_seq DESC LIMIT 1) r "
            "CROSS JOIN LATERAL unnest(r.cmds[1:1], r.cmds[2:2], r.cmds[3:3]) AS c(first_seq, is_cancel, oid) "
            "LEFT JOIN settled_command_takers t ON t.market = r.market AND t.first_seq = c.first_seq "
            "LEFT JOIN orders o ON o.id = coalesce(c.oid, t.oid) ORDER BY c.first_seq DESC LIMIT 1", self.market)
        self.taker = self.open_start = self.placeholder = None
        self.completed = frozenset()
        if row is None:
            return
        if row["oid"] is None:
            self.open_start = self.placeholder = int(row["first_seq"])
        elif not row["is_cancel"] and row["state"] == "pending":
            self.taker = int(row["oid"])

    def segment(self, fresh: list[SettleEvent], state_of: Callable[[int], str]) -> list[CommandRow]:
        """The commands starting in `fresh` (events in seq order, none applied yet); `state_of(oid)`
        is an order's state before the batch. A command whose taker is still unknown at the end
        is recorded once with oid NULL (the placeholder); the row that names its taker in a later
        batch is in `completed` afterwards (it updates the placeholder instead of inserting)."""
        rows: list[CommandRow] = []
        completed: set[int] = set()

        def close_open_start(oid: int) -> None:
            assert self.open_start is not None
            rows.append((self.open_start, False, oid))
            if self.open_start == self.placeholder:
                completed.add(self.open_start)
                self.placeholder = None
            self.open_start = None

        opened: set[int] = set()
        finished: set[int] = set()

        def resting(oid: int) -> bool:
            return oid not in finished and (oid in opened or state_of(oid) == "open")

        for e in fresh:
            if self.taker is not None:
                if (type(e) is EvOpen or type(e) is EvDone) and e.oid == self.taker:
                    self.taker = None
            elif self.open_start is not None:
                if type(e) is EvTrade:
                    self.taker = e.taker
                    close_open_start(e.taker)
                elif type(e) is EvOpen or (type(e) is EvDone and not resting(e.oid)):
                    close_open_start(e.oid)
                # else: one more resting maker canceled by self-trade prevention
            else:
                seq = e.seq
                if type(e) is EvTrade:
                    self.taker = e.taker
                    rows.append((seq, False, e.taker))
                elif type(e) is EvOpen:
                    rows.append((seq, False, e.oid))
                elif type(e) is EvCancelReject or (e.reason == "canceled" and not e.detail):
                    rows.append((seq, True, e.oid))  # a cancel command
                elif e.reason == "canceled" and e.detail == STP_DETAIL and resting(e.oid):
                    self.open_start = seq
                else:
                    rows.append((seq, False, e.oid))
            if type(e) is EvOpen:
                opened.add(e.oid)
                finished.discard(e.oid)
            elif type(e) is EvDone:
                finished.add(e.oid)
                opened.discard(e.oid)
        if self.open_start is not None and self.open_start != self.placeholder:
            rows.append((self.open_start, False, None))  # filled in by the batch that names the taker
            self.placeholder = self.open_start
        self.completed = frozenset(completed)
        return rows

    @staticmethod
    def arrays(rows: list[CommandRow], completed: frozenset[int]) -> tuple[list[list[Any]], list[list[Any]]]:
        """`rows` (from `segment`, with its `completed`) as the two arrays `ledger_settle_batch`
        (migration 0107) records: the new rows as a bigint[3][k] (first_seq, is_cancel 0/1, oid;
        NULL: taker not yet known), inserted plainly (a batch is written once, fenced by its
        offset), and the placeholders an earlier batch wrote, now naming their taker, as a
        bigint[2][k] (first_seq, oid). Empty lists when there are none."""
        new = [r for r in rows if r[0] not in completed]
        done = [r for r in rows if r[0] in completed]
        return ([[r[0] for r in new], [int(r[1]) for r in new], [r[2] for r in new]] if new else [],
                [[r[0] for r in done], [r[2] for r in done]] if done else [])


async def lost_commands(conn: asyncpg.Connection, market: str, ck_seq: int, settled: int,
                        wm: dict[int, int]) -> list[Command]:
    """The commands behind settled seqs (ck_seq, settled], exactly as first forwarded, in order."""
    rows = await conn.fetch(
        "WITH c AS (SELECT x.first_seq, x.is_cancel <> 0 AS is_cancel, coalesce(x.oid, t.oid) AS oid "
        "FROM settled_command_runs r "
        "CROSS JOIN LATERAL unnest(r.cmds[1:1], r.cmds[2:2], r.cmds[3:3]) AS x(first_seq, is_cancel, oid) "
        "LEFT JOIN settled_command_takers t ON t.market = r.market AND t.first_seq = x.first_seq "
        "WHERE r.market = $1 AND r.last_seq > $2 AND r.first_seq <= $3) "
        "SELECT c.first_seq, c.is_cancel, c.oid, o.user_id, o.side, o.type, o.price_ticks, o.qty_lots, "
        "o.funds_notional, o.tif, o.post_only, o.stp, o.shard, o.iid, o.ts_ms FROM c "
        "LEFT JOIN orders o ON o.id = c.oid WHERE c.first_seq > $2 AND c.first_seq <= $3 "
        "ORDER BY c.first_seq", market, ck_seq, settled)
    if not rows or rows[0]["first_seq"] != ck_seq + 1:
        log.error("%s: no record of the command behind settled seq %d (settled before the record existed?); "
                  "the intake re-forward alone may regenerate seqs %d..%d differently",
                  market, ck_seq + 1, ck_seq + 1, settled)
        return []
    cancel_oids = [r["oid"] for r in rows if r["is_cancel"]]
    requests: dict[int, list[Any]] = {}
    if cancel_oids:
        for c in await conn.fetch("SELECT shard, iid, order_id, user_id, ts_ms FROM cancel_requests "
                                  "WHERE market = $1 AND order_id = ANY($2::bigint[]) ORDER BY iid",
                                  market, cancel_oids):
            requests.setdefault(c["order_id"], []).append(c)
    last = dict(wm)  # per shard: the last iid the engine has taken, command by command
    out: list[Command] = []
    for r in rows:
        if r["oid"] is None or r["user_id"] is None:
            log.error("%s: the command at seq %d is not known; re-feeding only the %d before it",
                      market, r["first_seq"], len(out))
            break
        if not r["is_cancel"]:
            out.append(PlaceOrder(r["oid"], r["user_id"], r["side"], r["type"], r["price_ticks"], r["qty_lots"],
                                  r["funds_notional"], r["tif"], r["post_only"], r["stp"], r["shard"], r["iid"],
                                  r["ts_ms"]))
            last[r["shard"]] = r["iid"]
            continue
        cand = next((c for c in requests.get(r["oid"], []) if c["iid"] > last.get(c["shard"], 0)), None)
        if cand is None:
            log.error("%s: no cancel request of order %d above the watermark for seq %d; re-feeding only the %d "
                      "before it", market, r["oid"], r["first_seq"], len(out))
            break
        out.append(CancelOrder(cand["order_id"], cand["user_id"], cand["shard"], cand["iid"], cand["ts_ms"]))
        last[cand["shard"]] = cand["iid"]
    return out


async def refeed_lost_prefixes(pool: asyncpg.Pool, redis: Redis, markets: Iterable[str]) -> int:
    """For each market whose engine checkpoint is behind settlement (Redis lost data), XADD the
    commands behind the lost settled seqs to `match:in{M}` in their original order. Call it
    before forwarding anything else after a (re)start. Returns the commands fed."""
    fed = 0
    for market in sorted(markets):
        async with pool.acquire() as conn:
            settled = int(await conn.fetchval("SELECT last_seq FROM settlement_offsets WHERE market = $1", market)
                          or 0)
            if settled == 0:
                continue
            ckpt: Any = await redis.hgetall(keys.checkpoint(market))  # type: ignore[misc]
            ck_seq = int(ckpt.get(b"seq", b"0"))
            if ck_seq >= settled:
                continue  # the normal case: the engine is at or ahead of settlement
            wm = {int(k[3:]): int(v) for k, v in ckpt.items() if k.startswith(b"wm:")}
            cmds = await lost_commands(conn, market, ck_seq, settled, wm)
        if not cmds:
            continue
        pipe = redis.pipeline(transaction=False)
        for i in range(0, len(cmds), _FEED_CHUNK):
            pipe.xadd(keys.match_in(market), {BATCH_FIELD: encode_batch(cmds[i:i + _FEED_CHUNK])})
        await pipe.execute()
        fed += len(cmds)
        log.warning("%s: Redis lost engine output up to settled seq %d (checkpoint seq %d): re-fed the %d "
                    "command(s) behind it in their original order", market, settled, ck_seq, len(cmds))
    return fed


# A forward of NEW commands is refused while the engine's checkpoint is behind what settlement
# already applied: that only happens after Redis lost engine output, and then the commands behind
# the lost settled seqs must be re-fed (in first-seq order, by `refeed_lost_prefixes`) before
# anything else enters `match:in`. Check and XADD are one script, so a Redis that restarted
# between the check and the write cannot slip new commands in front of the re-feed.
_GUARDED_FORWARD = """
local ck = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if ck < tonumber(ARGV[1]) then
  return redis.error_reply('COFFER_LOST engine checkpoint seq ' .. ck .. ' is behind settled seq ' .. ARGV[1])
end
for i = 3, #ARGV do redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[i]) end
return #ARGV - 2
"""


class RedisLossError(LedgerError):
    """Redis lost engine output that settlement applied: the consumer must recover (re-feed)."""


def guarded_forward_script(redis: Redis) -> Any:
    return redis.register_script(_GUARDED_FORWARD)


async def forward_guarded(script: Any, redis: Redis, settled: dict[str, int],
                          payloads: dict[str, list[bytes]], feed: dict[str, bytes] | None = None) -> None:
    """XADD each market's payloads to `match:in{M}` unless its engine checkpoint is behind
    `settled[M]`; raises RedisLossError when any market refused (what was accepted stays:
    the re-send after recovery is dropped by the engine's watermark). `feed[M]`, the new-order
    feed's entry (ledger/order_feed.py), is XADDed to `settle:orders{M}` just before (the same
    pipeline): it exists before the engine can see its orders; an entry whose forward is
    refused is harmless (its orders are as the intake committed them).

    One round trip: the script goes by EVALSHA (redis-py's pipeline would first ask SCRIPT
    EXISTS, a round trip of its own, on every call); when Redis does not have it (NOSCRIPT: it
    restarted or flushed its scripts), it is loaded and those markets' calls alone are sent again
    (a call refused with NOSCRIPT did nothing)."""
    from redis.exceptions import NoScriptError, ResponseError

    calls: dict[str, tuple[Any, ...]] = {}  # market -> the script call's keys and arguments
    at: dict[str, int] = {}  # market -> the index of its script call's result
    n = 0
    async with redis.pipeline(transaction=False) as pipe:  # reset even when Redis went away
        for symbol, chunks in payloads.items():
            entry = (feed or {}).get(symbol)
            if entry is not None:
                pipe.xadd(feed_key(symbol), {FEED_FIELD: entry}, maxlen=FEED_MAXLEN, approximate=True)
                n += 1
            calls[symbol] = (keys.checkpoint(symbol), keys.match_in(symbol), settled.get(symbol, 0), BATCH_FIELD,
                             *chunks)
            pipe.evalsha(script.sha, 2, *calls[symbol])
            at[symbol] = n
            n += 1
        results = list(await pipe.execute(raise_on_error=False))
    missing = [symbol for symbol, i in at.items() if isinstance(results[i], NoScriptError)]
    if missing:
        await redis.script_load(script.script)
        async with redis.pipeline(transaction=False) as pipe:
            for symbol in missing:
                pipe.evalsha(script.sha, 2, *calls[symbol])
            again = await pipe.execute(raise_on_error=False)
        results = [r for r in results if not isinstance(r, NoScriptError)] + list(again)
    refused = [str(r) for r in results if isinstance(r, ResponseError)]
    if refused:
        raise RedisLossError(f"forward refused: {refused[0]}")
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise errors[0]
