"""Market specs and the conversions between API decimal strings and engine integers.

A market trades `base` against `quote`. Engine prices are integer ticks, quantities integer
lots; `base_units_per_lot` and `quote_units_per_tick_lot` turn them into ledger units.
Decimal strings exist only at the API edge: `price_to_ticks`, `qty_to_lots`,
`quote_to_funds` parse them exactly (decimal.Decimal, never float) and reject values off
the grid with a reason the client can act on. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ledger.errors import InvalidAmountError

MAX_INT64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Market:
    symbol: str
    base: str
    quote: str
    tick: str
    lot: str
    base_units_per_lot: int
    quote_units_per_tick_lot: int
    min_notional: int  # quote ledger units
    maker_fee_bps: int
    taker_fee_bps: int

    @classmethod
    def from_row(cls, row: Any) -> Market:
        return cls(
            symbol=row["symbol"], base=row["base"], quote=row["quote"], tick=row["tick"], lot=row["lot"],
            base_units_per_lot=int(row["base_units_per_lot"]),
            quote_units_per_tick_lot=int(row["quote_units_per_tick_lot"]),
            min_notional=int(row["min_notional"]), maker_fee_bps=int(row["maker_fee_bps"]),
            taker_fee_bps=int(row["taker_fee_bps"]),
        )


MARKET_COLUMNS = (
    "symbol, base, quote, tick, lot, base_units_per_lot, quote_units_per_tick_lot, min_notional, "
    "maker_fee_bps, taker_fee_bps"
)


def _decimal(text: str, what: str) -> Decimal:
    if not isinstance(text, str) or not text or text.strip() != text:
        raise InvalidAmountError(f"{what} must be a decimal string such as '12.5', got {text!r}")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise InvalidAmountError(f"{what} must be a decimal string such as '12.5', got {text!r}") from None
    if not value.is_finite() or value <= 0:
        raise InvalidAmountError(f"{what} must be a positive number, got {text!r}")
    return value


def _on_grid(text: str, step: str, what: str) -> int:
    value = _decimal(text, what)
    count, rest = divmod(value, Decimal(step))
    if rest != 0:
        raise InvalidAmountError(f"{what} {text} is not a multiple of {step}")
    n = int(count)
    if n <= 0 or n > MAX_INT64:
        raise InvalidAmountError(f"{what} {text} is out of range")
    return n


# Parsed (string, step) -> count, since order flow repeats the same few prices and sizes;
# bounded so a flood of distinct strings cannot grow it without limit.
_GRID_CACHE: dict[tuple[str, str], int] = {}
_GRID_CACHE_MAX = 100_000


def _cached_grid(text: str, step: str, what: str) -> int:
    key = (text, step)
    n = _GRID_CACHE.get(key)
    if n is None:
        n = _on_grid(text, step, what)  # raises for bad input: errors are never cached
        if len(_GRID_CACHE) >= _GRID_CACHE_MAX:
            _GRID_CACHE.clear()
        _GRID_CACHE[key] = n
    return n


def price_to_ticks(market: Market, price: str) -> int:
    """'123.4' -> ticks; InvalidAmountError when not a positive multiple of the tick."""
    return _cached_grid(price, market.tick, "price")


def qty_to_lots(market: Market, qty: str) -> int:
    """'0.015' -> lots; InvalidAmountError when not a positive multiple of the lot."""
    return _cached_grid(qty, market.lot, "quantity")


def quote_to_funds(market: Market, quote_amount: str, quote_decimals: int) -> int:
    """A market buy's quote amount ('250.5' USDT) -> tick-lot notional units, rounded DOWN
    (the unspendable dust below one tick x lot is never frozen)."""
    value = _decimal(quote_amount, "funds")
    units = value.scaleb(quote_decimals)
    if units != units.to_integral_value():
        raise InvalidAmountError(f"funds {quote_amount} has more than {quote_decimals} decimals")
    funds = int(units) // market.quote_units_per_tick_lot
    if funds <= 0 or funds > MAX_INT64:
        raise InvalidAmountError(f"funds {quote_amount} is below one tick x lot or out of range")
    return funds


def units_to_decimal(amount: int, decimals: int) -> str:
    """Ledger units -> decimal string (exact), e.g. (150000000, 8) -> '1.5'."""
    text = format(Decimal(amount).scaleb(-decimals), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def decimal_to_units(text: str, decimals: int, what: str = "amount") -> int:
    """'1.5' with 8 decimals -> 150000000; rejects more decimals than the asset has."""
    value = _decimal(text, what)
    units = value.scaleb(decimals)
    if units != units.to_integral_value():
        raise InvalidAmountError(f"{what} {text} has more than {decimals} decimals")
    n = int(units)
    if n > MAX_INT64:
        raise InvalidAmountError(f"{what} {text} is out of range")
    return n
