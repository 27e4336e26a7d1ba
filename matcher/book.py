"""The order book core: price levels, price-time priority matching, no I/O, no clock.

This is the hot path, so it is written for speed rather than elegance. Orders are small
lists `[remaining_lots, oid, user, price_ticks, is_buy]`; each side keeps a dict of price
level -> deque of orders in time order, a dict of level -> live quantity, and a sorted list
of level keys whose best level is at the END (bids store `price`, asks store `-price`), so
the best level is `keys[-1]` and removing it is `keys.pop()`. Cancels are lazy: the order is
marked with `remaining = 0`, dropped from the id index and skipped (and popped) when
matching reaches it; a level is removed as soon as its live quantity reaches zero.

The core appends plain tuples to an output list (see the `EV_*` layouts below); the engine
(`matcher.engine`) numbers them and turns them into `matcher.protocol` events. Every result
is a pure function of the command sequence: the same commands give the same tuples.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from operator import itemgetter
from typing import Any

# Event tuple layouts (first item is the kind):
#   (EV_TRADE, taker_oid, maker_oid, taker_user, maker_user, taker_is_buy, price, qty)
#   (EV_OPEN, oid, user, is_buy, price, remaining)
#   (EV_DONE, oid, user, reason, remaining, funds_remaining, detail)
#   (EV_CANCEL_REJECT, oid, user, reason)
EV_TRADE = 0
EV_OPEN = 1
EV_DONE = 2
EV_CANCEL_REJECT = 3

# Done reasons (index into protocol.DoneReason in engine.py).
R_FILLED = 0
R_CANCELED = 1
R_EXPIRED = 2
R_REJECTED = 3

# Time in force.
GTC = 0
IOC = 1
FOK = 2

# Self-trade prevention modes.
STP_NONE = 0
STP_CANCEL_TAKER = 1
STP_CANCEL_MAKER = 2
STP_CANCEL_BOTH = 3

_NO_LIMIT = -(1 << 126)  # a level key lower than any real key: "match at any price"
_COMPACT_MIN = 16  # levels rebuild only past this many cancelled orders inside them

EventTuple = tuple[Any, ...]
SnapshotRow = tuple[int, int, bool, int, int]  # (oid, user, is_buy, price, remaining)

_live = itemgetter(0)  # an order's remaining lots: 0 once cancelled or filled
_snapshot_row = itemgetter(1, 2, 4, 3, 0)  # order list -> SnapshotRow


class BookSide:
    """One side of the book. `sign` is +1 for bids and -1 for asks (key = sign * price)."""

    __slots__ = ("dead", "keys", "levels", "qty", "sign")

    def __init__(self, sign: int) -> None:
        self.sign = sign
        self.keys: list[int] = []
        self.levels: dict[int, deque[list[Any]]] = {}
        self.qty: dict[int, int] = {}
        self.dead: dict[int, int] = {}  # cancelled orders left inside a level's deque (an upper bound)

    def add(self, order: list[Any]) -> None:
        price = order[3]
        level = self.levels.get(price)
        if level is None:
            self.levels[price] = deque((order,))
            self.qty[price] = order[0]
            insort(self.keys, self.sign * price)
        else:
            level.append(order)
            self.qty[price] += order[0]

    def drop_level(self, price: int) -> None:
        del self.levels[price]
        del self.qty[price]
        self.dead.pop(price, None)
        keys = self.keys
        key = self.sign * price
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def best_price(self) -> int | None:
        return self.keys[-1] * self.sign if self.keys else None

    def depth(self, levels: int) -> list[tuple[int, int]]:
        """The top `levels` levels as (price_ticks, qty_lots), best first."""
        out: list[tuple[int, int]] = []
        sign = self.sign
        for key in reversed(self.keys[-levels:] if levels > 0 else []):
            price = key * sign
            out.append((price, self.qty[price]))
        return out


class OrderBook:
    """One market's book. Methods append event tuples to `out` and return nothing."""

    __slots__ = ("asks", "bids", "orders")

    def __init__(self) -> None:
        self.bids = BookSide(1)
        self.asks = BookSide(-1)
        self.orders: dict[int, list[Any]] = {}

    # ---- commands ---------------------------------------------------------------------

    def place_limit(
        self, out: list[EventTuple], oid: int, user: int, is_buy: bool, price: int, qty: int,
        tif: int, post_only: bool, stp: int,
    ) -> None:
        """A limit order of `qty` lots at `price` ticks (both > 0, checked by the caller)."""
        if oid in self.orders:
            out.append((EV_DONE, oid, user, R_REJECTED, qty, 0, "duplicate order id"))
            return
        opp = self.asks if is_buy else self.bids
        lim = -price if is_buy else price
        if post_only:
            if tif != GTC:
                out.append((EV_DONE, oid, user, R_REJECTED, qty, 0, "post-only requires GTC"))
                return
            if opp.keys and opp.keys[-1] >= lim:
                out.append((EV_DONE, oid, user, R_REJECTED, qty, 0, "post-only order would cross"))
                return
            order = [qty, oid, user, price, is_buy]
            self.orders[oid] = order
            (self.bids if is_buy else self.asks).add(order)
            out.append((EV_OPEN, oid, user, is_buy, price, qty))
            return
        if tif == FOK and self._fillable(opp, lim, user, qty, stp) < qty:
            out.append((EV_DONE, oid, user, R_REJECTED, qty, 0, "fill-or-kill cannot fill"))
            return
        if opp.keys and opp.keys[-1] >= lim:
            rest, stopped = self._match(out, opp, lim, oid, user, is_buy, qty, stp)
        else:  # does not cross (most orders): skip the call
            rest, stopped = qty, False
        if stopped:
            out.append((EV_DONE, oid, user, R_CANCELED, rest, 0, "self-trade prevention"))
        elif rest == 0:
            out.append((EV_DONE, oid, user, R_FILLED, 0, 0, ""))
        elif tif == GTC:
            order = [rest, oid, user, price, is_buy]
            self.orders[oid] = order
            (self.bids if is_buy else self.asks).add(order)
            out.append((EV_OPEN, oid, user, is_buy, price, rest))
        else:
            out.append((EV_DONE, oid, user, R_EXPIRED, rest, 0, ""))

    def place_market(self, out: list[EventTuple], oid: int, user: int, is_buy: bool, qty: int, stp: int) -> None:
        """A market order for `qty` lots (> 0): fills what it can, the rest expires."""
        if oid in self.orders:
            out.append((EV_DONE, oid, user, R_REJECTED, qty, 0, "duplicate order id"))
            return
        opp = self.asks if is_buy else self.bids
        rest, stopped = self._match(out, opp, _NO_LIMIT, oid, user, is_buy, qty, stp)
        if stopped:
            out.append((EV_DONE, oid, user, R_CANCELED, rest, 0, "self-trade prevention"))
        elif rest == 0:
            out.append((EV_DONE, oid, user, R_FILLED, 0, 0, ""))
        else:
            out.append((EV_DONE, oid, user, R_EXPIRED, rest, 0, "no more liquidity"))

    def place_market_funds(self, out: list[EventTuple], oid: int, user: int, funds: int, stp: int) -> None:
        """A market buy spending at most `funds` (> 0) tick-lot notional units.

        At each maker it takes as many whole lots as the remaining funds buy at the maker's
        price. It ends `filled` when the remaining funds cannot buy one lot of the best ask
        still on the book (or are zero), `expired` when the asks ran out first.
        """
        if oid in self.orders:
            out.append((EV_DONE, oid, user, R_REJECTED, 0, funds, "duplicate order id"))
            return
        asks = self.asks
        keys = asks.keys
        levels = asks.levels
        lvl_qty = asks.qty
        orders = self.orders
        stopped = False
        while funds and keys:
            price = -keys[-1]
            afford = funds // price
            if afford == 0:
                break
            level = levels[price]
            while level:
                maker = level[0]
                mrem = maker[0]
                if mrem == 0:
                    level.popleft()
                    continue
                if maker[2] == user and stp:
                    if stp != STP_CANCEL_TAKER:
                        self._stp_cancel_maker(out, level, maker, lvl_qty, price)
                    if stp != STP_CANCEL_MAKER:
                        stopped = True
                        break
                    continue
                fill = afford if afford < mrem else mrem
                out.append((EV_TRADE, oid, maker[1], user, maker[2], True, price, fill))
                funds -= fill * price
                afford -= fill
                mrem -= fill
                lvl_qty[price] -= fill
                if mrem == 0:
                    maker[0] = 0
                    level.popleft()
                    del orders[maker[1]]
                    out.append((EV_DONE, maker[1], maker[2], R_FILLED, 0, 0, ""))
                else:
                    maker[0] = mrem
                if afford == 0:
                    break
            if lvl_qty[price] == 0:
                asks.drop_level(price)
            if stopped:
                break
        if stopped:
            out.append((EV_DONE, oid, user, R_CANCELED, 0, funds, "self-trade prevention"))
        elif funds and not keys:
            out.append((EV_DONE, oid, user, R_EXPIRED, 0, funds, "no more liquidity"))
        else:
            out.append((EV_DONE, oid, user, R_FILLED, 0, funds, ""))

    def cancel(self, out: list[EventTuple], oid: int, user: int) -> None:
        """Cancel a resting order of `user`; anything else gives a cancel rejection."""
        order = self.orders.get(oid)
        if order is None:
            out.append((EV_CANCEL_REJECT, oid, user, "order not on the book"))
            return
        if order[2] != user:
            out.append((EV_CANCEL_REJECT, oid, user, "order belongs to another user"))
            return
        del self.orders[oid]
        rem = order[0]
        order[0] = 0
        price = order[3]
        side = self.bids if order[4] else self.asks
        left = side.qty[price] - rem
        if left == 0:
            side.drop_level(price)
        else:
            side.qty[price] = left
            level = side.levels[price]
            if level[-1] is order:
                level.pop()
            elif level[0] is order:
                level.popleft()
            else:
                # A cancelled order stays in the deque (lazy). Count those; once they could be half the
                # level, rebuild it, so memory stays proportional to live orders (amortised O(1)).
                dead = side.dead.get(price, 0) + 1
                if dead > _COMPACT_MIN and dead * 2 > len(level):
                    side.levels[price] = deque(o for o in level if o[0])
                    del side.dead[price]
                else:
                    side.dead[price] = dead
        out.append((EV_DONE, oid, user, R_CANCELED, rem, 0, ""))

    # ---- internals --------------------------------------------------------------------

    def _stp_cancel_maker(
        self, out: list[EventTuple], level: deque[list[Any]], maker: list[Any], lvl_qty: dict[int, int], price: int
    ) -> None:
        rem = maker[0]
        maker[0] = 0
        level.popleft()
        del self.orders[maker[1]]
        lvl_qty[price] -= rem
        out.append((EV_DONE, maker[1], maker[2], R_CANCELED, rem, 0, "self-trade prevention"))

    def _match(
        self, out: list[EventTuple], opp: BookSide, lim: int, oid: int, user: int, is_buy: bool, qty: int, stp: int
    ) -> tuple[int, bool]:
        """Fill up to `qty` against `opp` at levels with key >= `lim`; returns (rest, stp_stopped)."""
        keys = opp.keys
        levels = opp.levels
        lvl_qty = opp.qty
        orders = self.orders
        sign = opp.sign
        while keys and keys[-1] >= lim:
            price = keys[-1] * sign
            level = levels[price]
            while level:
                maker = level[0]
                mrem = maker[0]
                if mrem == 0:
                    level.popleft()
                    continue
                if stp and maker[2] == user:
                    if stp != STP_CANCEL_TAKER:
                        self._stp_cancel_maker(out, level, maker, lvl_qty, price)
                    if stp != STP_CANCEL_MAKER:
                        if lvl_qty[price] == 0:
                            opp.drop_level(price)
                        return qty, True
                    continue
                fill = qty if qty < mrem else mrem
                out.append((EV_TRADE, oid, maker[1], user, maker[2], is_buy, price, fill))
                qty -= fill
                lvl_qty[price] -= fill
                if fill == mrem:
                    maker[0] = 0
                    level.popleft()
                    del orders[maker[1]]
                    out.append((EV_DONE, maker[1], maker[2], R_FILLED, 0, 0, ""))
                else:
                    maker[0] = mrem - fill
                if qty == 0:
                    break
            if lvl_qty[price] == 0:
                opp.drop_level(price)
            if qty == 0:
                break
        return qty, False

    def _fillable(self, opp: BookSide, lim: int, user: int, want: int, stp: int) -> int:
        """How many lots a taker could fill under `stp`, without changing anything (FOK)."""
        got = 0
        sign = opp.sign
        for key in reversed(opp.keys):
            if key < lim or got >= want:
                break
            price = key * sign
            if not stp:
                got += opp.qty[price]
                continue
            for maker in opp.levels[price]:
                if maker[0] == 0:
                    continue
                if maker[2] == user:
                    if stp == STP_CANCEL_MAKER:
                        continue
                    return got
                got += int(maker[0])
                if got >= want:
                    return got
        return got

    # ---- snapshot ---------------------------------------------------------------------

    def dump(self) -> list[SnapshotRow]:
        """Live orders as `(oid, user, is_buy, price, remaining)`, per side best level first, time order.

        Built in C (filter + itemgetter): a snapshot of a big book is taken on the runner's loop.
        """
        rows: list[SnapshotRow] = []
        for side in (self.bids, self.asks):
            levels = side.levels
            sign = side.sign
            for key in reversed(side.keys):
                rows += map(_snapshot_row, filter(_live, levels[key * sign]))
        return rows

    @classmethod
    def load(cls, rows: list[list[int]] | list[SnapshotRow]) -> OrderBook:
        """The book `dump` described (`is_buy` may also be 1/0, as older builds wrote it)."""
        book = cls()
        for oid, user, is_buy, price, remaining in rows:
            order = [remaining, oid, user, price, bool(is_buy)]
            book.orders[oid] = order
            (book.bids if is_buy else book.asks).add(order)
        return book
