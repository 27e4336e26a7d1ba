"""Pure balance arithmetic: what each ledger operation does to (available, frozen).

No I/O. Every function returns the balance deltas of an operation as `Delta`s (ledger
units, exact integers); the consumers add them to PostgreSQL in bulk, the tests to an
in-memory model. Units: prices in ticks, quantities in lots, `funds` in tick-lot notional
units; see `ledger.markets`.

Fee rule (the ONE rounding rule): a fee is taken from the asset the user receives,
`fee = ceil(received * fee_bps / 10_000)`, i.e. rounded UP to the next ledger unit, in
the exchange's favour. The taker pays `taker_fee_bps`, the maker `maker_fee_bps`.

Freeze rules: a limit buy freezes price x qty in quote; a limit or market sell freezes qty
in base; a market buy freezes its `funds` in quote (a market buy by quantity is refused:
its cost is unbounded). A buy that fills below its limit gets the difference back
(price-improvement refund) with each fill.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from ledger.errors import ArithmeticInvariantError, InvalidAmountError
from ledger.markets import Market

BPS = 10_000

# The value types below are NamedTuples rather than frozen dataclasses: they are made
# several times per trade on the settlement hot path, and tuples are several times cheaper.


class Delta(NamedTuple):
    user_id: int
    asset: str
    d_available: int
    d_frozen: int


class Freeze(NamedTuple):
    """What an order holds: `amount` ledger units of `asset`."""

    asset: str
    amount: int


class OrderHold(NamedTuple):
    """The parts of an order settlement needs: its owner, kind and what it still holds."""

    oid: int
    user_id: int
    side: str  # "buy" | "sell"
    type: str  # "limit" | "market"
    price_ticks: int | None
    frozen_remaining: int


class Hold(Protocol):
    """What `settle_trade` reads of an order: `OrderHold`, or any object with these attributes
    (the settlement consumer passes its in-memory orders, without building an OrderHold each)."""

    @property
    def oid(self) -> int: ...
    @property
    def user_id(self) -> int: ...
    @property
    def side(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def price_ticks(self) -> int | None: ...
    @property
    def frozen_remaining(self) -> int: ...


class TradeEffect(NamedTuple):
    """A settled trade: balance deltas, how much each order's hold shrank, the fees."""

    deltas: tuple[Delta, ...]
    base_amount: int
    quote_amount: int
    buyer_fee: int  # base units
    seller_fee: int  # quote units
    buy_consumed: int  # quote units leaving the buy order's hold
    sell_consumed: int  # base units leaving the sell order's hold


def fee_for(received: int, fee_bps: int) -> int:
    """ceil(received * fee_bps / 10000): the fee rounded up in the exchange's favour."""
    if received < 0 or not 0 <= fee_bps <= BPS:
        raise ArithmeticInvariantError(f"bad fee input received={received} bps={fee_bps}")
    return -((-received * fee_bps) // BPS)


def base_units(market: Market, qty_lots: int) -> int:
    return qty_lots * market.base_units_per_lot


def quote_units(market: Market, price_ticks: int, qty_lots: int) -> int:
    return price_ticks * qty_lots * market.quote_units_per_tick_lot


def order_freeze(
    market: Market, *, side: str, type: str, price_ticks: int | None, qty_lots: int | None, funds: int | None
) -> Freeze:
    """What an order must freeze. Raises InvalidAmountError for a malformed order."""
    if side == "buy":
        if type == "limit":
            if price_ticks is None or qty_lots is None or price_ticks <= 0 or qty_lots <= 0:
                raise InvalidAmountError("a limit buy needs a positive price and quantity")
            return Freeze(market.quote, quote_units(market, price_ticks, qty_lots))
        if funds is None or funds <= 0 or qty_lots is not None:
            raise InvalidAmountError("a market buy needs positive funds (quote amount), not a quantity")
        return Freeze(market.quote, funds * market.quote_units_per_tick_lot)
    if side == "sell":
        if qty_lots is None or qty_lots <= 0 or funds is not None:
            raise InvalidAmountError("a sell needs a positive quantity")
        if type == "limit" and (price_ticks is None or price_ticks <= 0):
            raise InvalidAmountError("a limit sell needs a positive price")
        return Freeze(market.base, base_units(market, qty_lots))
    raise InvalidAmountError(f"side must be buy or sell, got {side!r}")


def order_notional(market: Market, *, side: str, type: str, price_ticks: int | None, qty_lots: int | None,
                   funds: int | None) -> int | None:
    """Quote ledger units of the order for the minimum-notional check (None: market sell,
    whose notional is unknown until it fills)."""
    if type == "limit" and price_ticks is not None and qty_lots is not None:
        return quote_units(market, price_ticks, qty_lots)
    if side == "buy" and funds is not None:
        return funds * market.quote_units_per_tick_lot
    return None


def freeze_deltas(user_id: int, freeze: Freeze) -> tuple[Delta, ...]:
    return (Delta(user_id, freeze.asset, -freeze.amount, freeze.amount),)


def add_freeze(acc: dict[tuple[int, str], list[int]], user_id: int, freeze: Freeze) -> None:
    """`add_deltas(acc, freeze_deltas(user_id, freeze))` without building the deltas: the intake
    freezes once per order it places, into two sums (measured: about 0.1 against 0.9 us)."""
    asset, amount = freeze
    cur = acc.get((user_id, asset))
    if cur is None:
        acc[(user_id, asset)] = [-amount, amount]
    else:
        cur[0] -= amount
        cur[1] += amount


def release_deltas(user_id: int, asset: str, frozen_remaining: int) -> tuple[Delta, ...]:
    """Cancel / expire / reject / done: whatever the order still holds goes back."""
    if frozen_remaining < 0:
        raise ArithmeticInvariantError(f"negative hold {frozen_remaining}")
    if frozen_remaining == 0:
        return ()
    return (Delta(user_id, asset, frozen_remaining, -frozen_remaining),)


def settle_trade(
    market: Market, *, buy: Hold, sell: Hold, price_ticks: int, qty_lots: int, taker_side: str
) -> TradeEffect:
    """Settle one fill of `qty_lots` at the maker's `price_ticks`.

    The buy order's hold shrinks by what it reserved for these lots (limit x qty for a
    limit buy, the cost for a market buy); reserved minus cost is refunded to available.
    The seller's hold shrinks by the base sold. Each side receives its asset minus its fee.
    Raises ArithmeticInvariantError when a hold would go negative or a limit is violated.
    """
    if price_ticks <= 0 or qty_lots <= 0:
        raise ArithmeticInvariantError(f"trade needs positive price and qty, got {price_ticks} x {qty_lots}")
    if buy.side != "buy" or sell.side != "sell":
        raise ArithmeticInvariantError("settle_trade needs one buy and one sell order")
    base = base_units(market, qty_lots)
    quote = quote_units(market, price_ticks, qty_lots)
    if buy.type == "limit":
        assert buy.price_ticks is not None
        if price_ticks > buy.price_ticks:
            raise ArithmeticInvariantError(f"buy order {buy.oid} filled above its limit")
        reserved = quote_units(market, buy.price_ticks, qty_lots)
    else:
        reserved = quote
    if sell.type == "limit" and sell.price_ticks is not None and price_ticks < sell.price_ticks:
        raise ArithmeticInvariantError(f"sell order {sell.oid} filled below its limit")
    if reserved > buy.frozen_remaining:
        raise ArithmeticInvariantError(f"buy order {buy.oid} holds {buy.frozen_remaining}, fill needs {reserved}")
    if base > sell.frozen_remaining:
        raise ArithmeticInvariantError(f"sell order {sell.oid} holds {sell.frozen_remaining}, fill needs {base}")
    buyer_bps = market.taker_fee_bps if taker_side == "buy" else market.maker_fee_bps
    seller_bps = market.taker_fee_bps if taker_side == "sell" else market.maker_fee_bps
    buyer_fee = fee_for(base, buyer_bps)
    seller_fee = fee_for(quote, seller_bps)
    deltas = (
        Delta(buy.user_id, market.quote, reserved - quote, -reserved),
        Delta(buy.user_id, market.base, base - buyer_fee, 0),
        Delta(sell.user_id, market.base, 0, -base),
        Delta(sell.user_id, market.quote, quote - seller_fee, 0),
    )
    return TradeEffect(deltas, base, quote, buyer_fee, seller_fee, reserved, base)


def add_deltas(acc: dict[tuple[int, str], list[int]], deltas: tuple[Delta, ...]) -> None:
    """Sum `deltas` into `acc` as {(user, asset): [available, frozen]} (a batch's net change, or a
    running balance)."""
    for user, asset, d_available, d_frozen in deltas:
        cur = acc.get((user, asset))
        if cur is None:
            acc[(user, asset)] = [d_available, d_frozen]
        else:
            cur[0] += d_available
            cur[1] += d_frozen


def deposit_deltas(user_id: int, asset: str, amount: int) -> tuple[Delta, ...]:
    if amount <= 0:
        raise InvalidAmountError("deposit amount must be positive")
    return (Delta(user_id, asset, amount, 0),)


def reversal_deltas(user_id: int, asset: str, amount: int) -> tuple[Delta, ...]:
    """A reversed deposit leaves available (which may go negative)."""
    return (Delta(user_id, asset, -amount, 0),)


def withdrawal_hold_deltas(user_id: int, asset: str, amount: int) -> tuple[Delta, ...]:
    return (Delta(user_id, asset, -amount, amount),)


def withdrawal_settle_deltas(user_id: int, asset: str, amount: int) -> tuple[Delta, ...]:
    """The withdrawal went out: its hold leaves the books (amount - fee on chain, fee kept)."""
    return (Delta(user_id, asset, 0, -amount),)


def withdrawal_release_deltas(user_id: int, asset: str, amount: int) -> tuple[Delta, ...]:
    return (Delta(user_id, asset, amount, -amount),)


def can_spend(available: int, amount: int, any_negative: bool) -> bool:
    """A freeze/hold is allowed only from a balance that covers it, and never for a user
    with any negative balance (left by a deposit reversal)."""
    return not any_negative and 0 < amount <= available
