"""Redis key names of the matcher, all of one market under the hash tag `{M}`.

Every key one MULTI/EXEC touches shares the tag, so the same code runs on Redis Cluster.

- `match:in{M}`    stream of command batches (field `b`, see protocol.py), written by the ledger
- `match:out{M}`   stream of event batches (field `b`), written by the engine
- `match:ckpt{M}`  hash, written in the same MULTI/EXEC as the output it describes:
                   `in_id` last consumed match:in entry id, `seq` last event seq,
                   `wm:<shard>` last accepted intake id per intake shard, `fence` lease token
- `match:snap{M}`  the latest book snapshot (bytes) with the checkpoint it matches
- `match:snap:prev{M}` the snapshot before it (the fallback; match:in is trimmed before its input id)
- `match:lease{M}` leader lease (SET NX PX) holding the fencing token
- `match:fence{M}` INCR counter giving fencing tokens
"""

from __future__ import annotations


def match_in(market: str) -> str:
    return f"match:in{{{market}}}"


def match_out(market: str) -> str:
    return f"match:out{{{market}}}"


def checkpoint(market: str) -> str:
    return f"match:ckpt{{{market}}}"


def snapshot(market: str) -> str:
    return f"match:snap{{{market}}}"


def snapshot_prev(market: str) -> str:
    return f"match:snap:prev{{{market}}}"


def lease(market: str) -> str:
    return f"match:lease{{{market}}}"


def fence(market: str) -> str:
    return f"match:fence{{{market}}}"


def watermark_field(shard: int) -> str:
    return f"wm:{shard}"


# ---- market data (written by matcher.marketdata from match:out{M}) ----------------------
# - `md:depth{M}`        hash: `u` last event seq applied, `bids` / `asks` JSON [[price_ticks, qty_lots], ...]
#                        best first, top N levels (the snapshot a client starts from)
# - `md:depth:chan{M}`   pub/sub: JSON {"U": first seq, "u": last seq, "bids": [[p, q]...], "asks": [...]},
#                        every changed level, q = 0 when the level is gone; apply if U <= last_u + 1 <= u
# - `md:trades{M}`       sorted set, score = seq, member = JSON {"seq","price","qty","taker_side","ts_ms"};
#                        the last public trades (self-trades excluded)
# - `md:trades:chan{M}`  pub/sub: JSON list of the new public trades
# - `md:kline:{I}{M}`    hash per interval I (1m 5m 15m 1h 4h 1d 1w): field = bucket start ms, value = JSON
#                        [start_ms, open, high, low, close, volume_lots, quote_volume, trades, first_seq, last_seq]
# - `md:kline:chan{M}`   pub/sub: JSON {"interval": I, "k": [...]} for each candle updated
# - `md:ckpt{M}`         hash: `out_id` last match:out entry consumed, `seq` last event seq applied
# - `md:state{M}`        hash: `state` (msgpack of depth + open candles), `out_id`, `seq` -- restart point


def md_depth(market: str) -> str:
    return f"md:depth{{{market}}}"


def md_depth_channel(market: str) -> str:
    return f"md:depth:chan{{{market}}}"


def md_trades(market: str) -> str:
    return f"md:trades{{{market}}}"


def md_trades_channel(market: str) -> str:
    return f"md:trades:chan{{{market}}}"


def md_kline(market: str, interval: str) -> str:
    return f"md:kline:{interval}{{{market}}}"


def md_kline_channel(market: str) -> str:
    return f"md:kline:chan{{{market}}}"


def md_checkpoint(market: str) -> str:
    return f"md:ckpt{{{market}}}"


def md_state(market: str) -> str:
    return f"md:state{{{market}}}"
