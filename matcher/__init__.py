"""The matcher: a pure order book and matching engine, its Redis stream runner, market data."""

from __future__ import annotations

from matcher.book import OrderBook
from matcher.engine import Engine
from matcher.errors import MatcherError

__all__ = ["Engine", "MatcherError", "OrderBook"]
