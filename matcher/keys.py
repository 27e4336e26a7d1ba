"""Redis key names of the matcher, all of one market under the hash tag `{M}`.

Every key one MULTI/EXEC touches shares the tag, so the same code runs on Redis Cluster.

- `match:in{M}`    stream of command batches (field `b`, see protocol.py), written by the ledger
- `match:out{M}`   stream of event batches (field `b`), written by the engine
- `match:ckpt{M}`  hash, written in the same MULTI/EXEC as the output it describes:
                   `in_id` last consumed match:in entry id, `seq` last event seq,
                   `wm:<shard>` last accepted intake id per intake shard, `fence` lease token
- `match:snap{M}`  the latest book snapshot (bytes) with the checkpoint it matches
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


def lease(market: str) -> str:
    return f"match:lease{{{market}}}"


def fence(market: str) -> str:
    return f"match:fence{{{market}}}"


def watermark_field(shard: int) -> str:
    return f"wm:{shard}"
