"""Which users have a listener on their event channel now, so a publisher builds and sends user
events only for them.

The API's event hub (api/hub.py) SUBSCRIBEs `user:events:<id>` while a placement or cancel of
that user waits for its outcome (it subscribes BEFORE it sends its request) and while a
WebSocket of that user is open. Pub/sub delivers a message only to the subscribers present
when it is published, so events for a channel nobody subscribes are work thrown away. A
consumer that publishes user events therefore asks Redis once per batch, AFTER reading the
batch, which of the batch's users have a subscriber: `PUBSUB NUMPAT` and `PUBSUB NUMSUB
<channels>` in one round trip (a pipeline). Any pattern subscription (e.g. a monitor's
`PSUBSCRIBE user:events:*`, which NUMSUB does not count) makes every user a listener.

Why asking after the read loses nothing a subscriber could have had: a request's events are
in a batch only after the request was sent, so a subscription made before sending (the
placement's) is seen by the query. A subscription made after the query (a WebSocket opening
meanwhile) misses that batch's events, as it would have missed events published just before
it subscribed; pub/sub is at-most-once and the API reads PostgreSQL when an event does not come.

Redis Cluster: PUBSUB NUMSUB and NUMPAT count only the subscribers of the node asked, while a
PUBLISH reaches subscribers on every node. On a cluster ask every node and merge the counts
(or move the user channels to sharded pub/sub: SSUBSCRIBE / SPUBLISH / PUBSUB SHARDNUMSUB)
before relying on this filter; on one Redis (or a replica set) the answer is complete.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from ledger.intake_protocol import user_events_channel

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("ledger.online")


async def listening_users(redis: Redis, users: Collection[int]) -> Collection[int]:
    """The users of `users` whose `user:events:<id>` channel has at least one subscriber now
    (one round trip); all of `users` when any pattern subscription exists, or when Redis does
    not answer (the caller then publishes as if everyone listened, and that publish decides).
    Never raises a Redis error."""
    if not users:
        return users
    order = list(users)
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.pubsub_numpat()
        pipe.pubsub_numsub(*[user_events_channel(u) for u in order])
        numpat, numsub = await pipe.execute()
    except (RedisError, OSError) as exc:
        log.warning("who listens to user events is unknown, publishing for every user: %s", exc)
        return users
    if numpat:
        return users
    counts: list[Any] = numsub  # [(channel, subscribers)] in the order asked
    return {u for u, (_channel, n) in zip(order, counts, strict=True) if n}
