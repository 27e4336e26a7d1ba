"""Public market data for REST and WebSocket: depth, recent trades, K-lines.

Channel names the WebSocket accepts: `depth:<market>`, `trades:<market>`,
`kline:<interval>:<market>` with interval one of 1m 5m 15m 1h 4h 1d 1w. `parse_public_channel`
validates them (pure). The data itself is the matcher's (Redis keys and pub/sub channels in
matcher/keys.py, the `klines` table in PostgreSQL); until the matcher publishes market data,
`resolve_channel` refuses these subscriptions with a clear reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from api.errors import UnavailableError, ValidationError
from api.markets import MarketInfo, market_of

INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d", "1w")


def parse_public_channel(channel: str, markets: Mapping[str, MarketInfo]) -> tuple[str, str, str | None]:
    """`(kind, market, interval)` of a public channel name, or ValidationError."""
    parts = channel.split(":")
    if len(parts) == 2 and parts[0] in ("depth", "trades"):
        return parts[0], market_of(markets, parts[1], field="channel").symbol, None
    if len(parts) == 3 and parts[0] == "kline":
        if parts[1] not in INTERVALS:
            raise ValidationError(f"interval must be one of {', '.join(INTERVALS)}", field="channel")
        return "kline", market_of(markets, parts[2], field="channel").symbol, parts[1]
    raise ValidationError(
        "channel must be depth:<market>, trades:<market>, kline:<interval>:<market>, orders or balances",
        field="channel",
    )


def resolve_channel(channel: str, markets: Mapping[str, MarketInfo]) -> tuple[str, Callable[[bytes], Any]]:
    """The Redis pub/sub channel behind a public WebSocket channel and a formatter of its messages."""
    parse_public_channel(channel, markets)
    raise UnavailableError(f"market data for {channel} is not published by this build yet")
