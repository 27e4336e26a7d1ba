"""Which users have a listener on their event channel now, so a publisher builds and sends user
events only for them.

The API's event hub (api/hub.py) SUBSCRIBEs `user:events:<id>` while a placement or cancel of
that user waits for its outcome (it subscribes BEFORE it sends its request) and while a
WebSocket of that user is open. Pub/sub delivers a message only to the subscribers present
when it is published, so events for a channel nobody subscribes are work thrown away. A
consumer that publishes user events therefore asks Redis once per batch, AFTER reading the
batch, which of the batch's users have a subscriber: `PUBSUB NUMPAT`, then `PUBSUB NUMSUB
<channels>`, in one round trip (a small Lua script: the ids go as one argument and only the
listening ones come back, which costs this process a fraction of a pipeline of the two
commands). Any pattern subscription (e.g. a monitor's `PSUBSCRIBE user:events:*`, which
NUMSUB does not count) makes every user a listener.

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
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from ledger.intake_protocol import user_events_channel

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("ledger.online")

_PREFIX = user_events_channel(0).removesuffix("0")  # the channel of user <id> is _PREFIX + str(id)

# ARGV[1]: the channel prefix, ARGV[2]: user ids joined by ",". Returns -1 when a pattern
# subscription exists, else the ids (strings: a Lua number is a double) whose channel has a
# subscriber. NUMSUB in chunks: Lua's unpack() takes a few thousand values at most.
_LISTENING = """
if redis.call('PUBSUB', 'NUMPAT') > 0 then return -1 end
local prefix, ids, out = ARGV[1], {}, {}
for id in string.gmatch(ARGV[2], '[^,]+') do ids[#ids + 1] = id end
for i = 1, #ids, 1000 do
  local channels = {}
  for j = i, math.min(i + 999, #ids) do channels[#channels + 1] = prefix .. ids[j] end
  local counts = redis.call('PUBSUB', 'NUMSUB', unpack(channels))
  for k = 2, #counts, 2 do
    if counts[k] > 0 then out[#out + 1] = ids[i + k / 2 - 1] end
  end
end
return out
"""


class OnlineUsers:
    """Asks one Redis which users listen to their event channel (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(_LISTENING)

    async def among(self, users: Collection[int]) -> Collection[int]:
        """The users of `users` whose `user:events:<id>` channel has at least one subscriber now
        (one round trip); all of `users` when any pattern subscription exists, or when Redis
        does not answer (the caller then publishes as if everyone listened, and that publish
        decides). Never raises a Redis error."""
        if not users:
            return users
        try:
            reply = await self._script(keys=[], args=[_PREFIX, ",".join(map(str, users))])
        except (RedisError, OSError) as exc:
            log.warning("who listens to user events is unknown, publishing for every user: %s", exc)
            return users
        if reply == -1:
            return users
        return {int(u) for u in reply}
