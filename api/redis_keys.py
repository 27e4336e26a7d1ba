"""Redis key names the trading API writes itself, under the prefix `api:`.

- `api:sig{<key_id>}:<signature>`  SET NX with a TTL of twice the timestamp window: a signature
                                    seen once is refused afterwards (replay protection)
- `api:rl{<key_id>}:<second>`       INCR counter of requests of a key in one Unix second, TTL 2 s
- `api:reply:<instance>`            pub/sub channel on which this API instance receives order
                                    outcomes (named in each intake request)

Market data and user-event keys are read from the matcher's and ledger's key modules.
"""

from __future__ import annotations


def signature_seen(key_id: str, signature: str) -> str:
    return f"api:sig{{{key_id}}}:{signature}"


def rate_counter(key_id: str, second: int) -> str:
    return f"api:rl{{{key_id}}}:{second}"


def reply_channel(instance: str) -> str:
    return f"api:reply:{instance}"
