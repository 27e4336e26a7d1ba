"""Markets as the API sees them, and validation of order requests into engine units.

`MarketInfo` joins a `markets` row with its assets' ledger decimals (ledger tables, read only).
`validate_order(body, markets)` is pure: it turns the JSON of `POST /api/v1/orders` into an
`OrderIntent` in engine units (price ticks, quantity lots, market-buy funds in tick-lot notional
units), or raises `ValidationError` naming the field and why: missing, wrong type, not a
decimal string, zero or negative, too many decimals, off the tick or lot, below the market's
minimum notional, unknown market, contradictory fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.amounts import Dec, format_steps, format_units, parse_decimal, parse_positive, to_steps, to_units
from api.errors import ValidationError

if TYPE_CHECKING:
    import asyncpg

INT64_MAX = 2**63 - 1
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,36}$")
_ORDER_FIELDS = frozenset(
    {"market", "side", "type", "price", "quantity", "quote_quantity", "time_in_force", "post_only",
     "client_order_id", "stp"}
)
STP_MODES = ("none", "cancel_taker", "cancel_maker", "cancel_both")


@dataclass(frozen=True, slots=True)
class MarketInfo:
    symbol: str
    base: str
    quote: str
    tick: Dec
    lot: Dec
    base_units_per_lot: int
    quote_units_per_tick_lot: int
    min_notional: int  # quote ledger units
    maker_fee_bps: int
    taker_fee_bps: int
    base_decimals: int
    quote_decimals: int
    enabled: bool

    def price_str(self, ticks: int) -> str:
        return format_steps(ticks, self.tick)

    def qty_str(self, lots: int) -> str:
        return format_steps(lots, self.lot)

    def base_str(self, units: int) -> str:
        return format_units(units, self.base_decimals)

    def quote_str(self, units: int) -> str:
        return format_units(units, self.quote_decimals)

    def public(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol, "base": self.base, "quote": self.quote,
            "tick": str(self.tick), "lot": str(self.lot),
            "min_notional": self.quote_str(self.min_notional),
            "maker_fee_bps": self.maker_fee_bps, "taker_fee_bps": self.taker_fee_bps,
            "base_decimals": self.base_decimals, "quote_decimals": self.quote_decimals,
            "enabled": self.enabled,
        }


async def load_markets(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, MarketInfo]:
    rows = await conn.fetch(
        """
        SELECT m.symbol, m.base, m.quote, m.tick, m.lot, m.base_units_per_lot, m.quote_units_per_tick_lot,
               m.min_notional, m.maker_fee_bps, m.taker_fee_bps, m.enabled,
               b.ledger_decimals AS base_decimals, q.ledger_decimals AS quote_decimals
        FROM markets m JOIN assets b ON b.code = m.base JOIN assets q ON q.code = m.quote
        ORDER BY m.symbol
        """
    )
    return {
        r["symbol"]: MarketInfo(
            r["symbol"], r["base"], r["quote"], parse_decimal("tick", r["tick"]), parse_decimal("lot", r["lot"]),
            int(r["base_units_per_lot"]), int(r["quote_units_per_tick_lot"]), int(r["min_notional"]),
            int(r["maker_fee_bps"]), int(r["taker_fee_bps"]), int(r["base_decimals"]), int(r["quote_decimals"]),
            bool(r["enabled"]),
        )
        for r in rows
    }


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A validated order in engine units; `price_ticks` None for market orders."""

    market: str
    side: str
    type: str
    price_ticks: int | None
    qty_lots: int | None
    funds_notional: int | None
    tif: str
    post_only: bool
    stp: str
    client_order_id: str | None


def market_of(markets: Mapping[str, MarketInfo], raw: object, field: str = "market") -> MarketInfo:
    if raw is None or raw == "":
        raise ValidationError("is required (e.g. \"BTC-USDT\")", field=field)
    if not isinstance(raw, str):
        raise ValidationError("must be a string such as \"BTC-USDT\"", field=field)
    info = markets.get(raw.upper())
    if info is None:
        known = ", ".join(sorted(markets)) or "none"
        raise ValidationError(f"unknown market {raw[:40]!r}; known markets: {known}", field=field)
    if not info.enabled:
        raise ValidationError(f"market {info.symbol} is not trading", field=field)
    return info


def _choice(body: Mapping[str, Any], field: str, choices: tuple[str, ...], default: str | None) -> str:
    raw = body.get(field, default)
    if raw is None:
        raise ValidationError(f"is required: one of {', '.join(choices)}", field=field)
    if not isinstance(raw, str) or raw not in choices:
        raise ValidationError(f"must be one of {', '.join(choices)}, got {str(raw)[:40]!r}", field=field)
    return raw


def _int64(field: str, value: int) -> int:
    if value > INT64_MAX:
        raise ValidationError("is too large", field=field)
    return value


def validate_order(body: object, markets: Mapping[str, MarketInfo]) -> OrderIntent:
    """The order in engine units, or `ValidationError` on the first field that is wrong."""
    if not isinstance(body, Mapping):
        raise ValidationError("the body must be a JSON object", field="body")
    unknown = sorted(set(body) - _ORDER_FIELDS)
    if unknown:
        raise ValidationError(f"unknown field; allowed: {', '.join(sorted(_ORDER_FIELDS))}", field=unknown[0])
    info = market_of(markets, body.get("market"))
    side = _choice(body, "side", ("buy", "sell"), None)
    otype = _choice(body, "type", ("limit", "market"), "limit")
    stp = _choice(body, "stp", STP_MODES, "none")
    post_only = body.get("post_only", False)
    if not isinstance(post_only, bool):
        raise ValidationError("must be true or false", field="post_only")
    coid = body.get("client_order_id")
    if coid is not None and (not isinstance(coid, str) or not _CLIENT_ID.match(coid)):
        raise ValidationError("must be 1-36 characters of letters, digits and _.:-", field="client_order_id")

    price_ticks: int | None = None
    qty_lots: int | None = None
    funds: int | None = None
    has_qty = body.get("quantity") is not None
    has_quote = body.get("quote_quantity") is not None
    if otype == "limit":
        tif = _choice(body, "time_in_force", ("GTC", "IOC", "FOK"), "GTC")
        if has_quote:
            raise ValidationError("is only for market buys; a limit order gives price and quantity",
                                  field="quote_quantity")
        price_ticks = _int64("price", to_steps("price", parse_positive("price", body.get("price")), info.tick, "tick"))
        qty_lots = _int64("quantity", to_steps("quantity", parse_positive("quantity", body.get("quantity")),
                                               info.lot, "lot"))
        if post_only and tif != "GTC":
            raise ValidationError("post_only orders must be GTC", field="time_in_force")
        notional = price_ticks * qty_lots * info.quote_units_per_tick_lot
        _int64("quantity", notional)
        if notional < info.min_notional:
            raise ValidationError(
                f"price x quantity = {info.quote_str(notional)} {info.quote} is below the minimum notional "
                f"{info.quote_str(info.min_notional)} {info.quote}", field="quantity")
    else:
        tif = _choice(body, "time_in_force", ("IOC", "FOK"), "IOC")
        if body.get("price") is not None:
            raise ValidationError("must not be given for a market order", field="price")
        if post_only:
            raise ValidationError("cannot be used with a market order", field="post_only")
        if side == "sell" and has_quote:
            raise ValidationError("is only for market buys; a market sell gives quantity", field="quote_quantity")
        if side == "buy" and has_qty:
            raise ValidationError("is not accepted for a market buy: give quote_quantity (the amount to spend)",
                                  field="quantity")
        if has_quote:
            units = to_units("quote_quantity", parse_positive("quote_quantity", body.get("quote_quantity")),
                             info.quote_decimals)
            if units % info.quote_units_per_tick_lot:
                raise ValidationError(
                    f"must be a multiple of {info.quote_str(info.quote_units_per_tick_lot)} {info.quote}",
                    field="quote_quantity")
            funds = _int64("quote_quantity", units // info.quote_units_per_tick_lot)
            if units < info.min_notional:
                raise ValidationError(
                    f"is below the minimum notional {info.quote_str(info.min_notional)} {info.quote}",
                    field="quote_quantity")
        elif side == "buy":
            raise ValidationError("a market buy gives the quote amount to spend", field="quote_quantity")
        else:
            if not has_qty:
                raise ValidationError("is required", field="quantity")
            qty_lots = _int64("quantity", to_steps("quantity", parse_positive("quantity", body.get("quantity")),
                                                   info.lot, "lot"))
    return OrderIntent(info.symbol, side, otype, price_ticks, qty_lots, funds, tif, post_only, stp, coid)
