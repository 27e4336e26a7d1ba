"""A naive reference order book for differential tests: plain lists, linear scans.

It implements the matcher's documented semantics as directly as possible and makes no
attempt at speed: the best maker is found by scanning every resting order for the best price
and then the earliest arrival. The fast engine (`matcher.engine.Engine`) must give exactly the
same events for any sequence of well-formed commands.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from matcher.protocol import CancelOrder, CancelRejected, Command, Done, DoneReason, Event, Opened, PlaceOrder, Trade

STP_DETAIL = "self-trade prevention"


@dataclass
class RefOrder:
    oid: int
    user: int
    side: str
    price: int
    remaining: int
    arrival: int


class ReferenceBook:
    def __init__(self) -> None:
        self.resting: list[RefOrder] = []
        self.arrivals = 0
        self.seq = 0
        self.events: list[Event] = []
        self.ts = 0

    # -- helpers -------------------------------------------------------------------------
    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _done(self, oid: int, user: int, reason: DoneReason, remaining: int, funds: int = 0, detail: str = "") -> None:
        self.events.append(Done(self._next(), oid, user, reason, remaining, funds, self.ts, detail))

    def _best_maker(self, taker_side: str, limit: int | None) -> RefOrder | None:
        """The maker a taker meets next: best price, then earliest arrival; None if none crosses."""
        best: RefOrder | None = None
        for o in self.resting:
            if o.side == taker_side:
                continue
            if limit is not None and (o.price > limit if taker_side == "buy" else o.price < limit):
                continue
            if best is None:
                best = o
                continue
            better_price = o.price < best.price if taker_side == "buy" else o.price > best.price
            if better_price or (o.price == best.price and o.arrival < best.arrival):
                best = o
        return best

    def _rest(self, oid: int, user: int, side: str, price: int, qty: int) -> None:
        self.arrivals += 1
        self.resting.append(RefOrder(oid, user, side, price, qty, self.arrivals))
        self.events.append(Opened(self._next(), oid, user, side, price, qty, self.ts))  # type: ignore[arg-type]

    def _find(self, oid: int) -> RefOrder | None:
        for o in self.resting:
            if o.oid == oid:
                return o
        return None

    def _trade(self, taker: int, user: int, side: str, maker: RefOrder, qty: int) -> None:
        self.events.append(Trade(self._next(), taker, maker.oid, user, maker.user, side, maker.price, qty,  # type: ignore[arg-type]
                                 self.ts))
        maker.remaining -= qty
        if maker.remaining == 0:
            self.resting.remove(maker)
            self._done(maker.oid, maker.user, DoneReason.FILLED, 0)

    def _cancel_maker(self, maker: RefOrder) -> None:
        self.resting.remove(maker)
        self._done(maker.oid, maker.user, DoneReason.CANCELED, maker.remaining, 0, STP_DETAIL)

    def _match_qty(self, oid: int, user: int, side: str, limit: int | None, qty: int, stp: str) -> tuple[int, bool]:
        while qty > 0:
            maker = self._best_maker(side, limit)
            if maker is None:
                break
            if maker.user == user and stp != "none":
                if stp in ("cancel_maker", "cancel_both"):
                    self._cancel_maker(maker)
                if stp in ("cancel_taker", "cancel_both"):
                    return qty, True
                continue
            fill = min(qty, maker.remaining)
            qty -= fill
            self._trade(oid, user, side, maker, fill)
        return qty, False

    # -- commands ------------------------------------------------------------------------
    def apply(self, cmd: Command) -> list[Event]:
        start = len(self.events)
        self.ts = cmd.ts_ms
        if isinstance(cmd, CancelOrder):
            o = self._find(cmd.oid)
            if o is None:
                self.events.append(CancelRejected(self._next(), cmd.oid, cmd.user, "order not on the book", self.ts))
            elif o.user != cmd.user:
                self.events.append(CancelRejected(self._next(), cmd.oid, cmd.user, "order belongs to another user",
                                                  self.ts))
            else:
                self.resting.remove(o)
                self._done(o.oid, o.user, DoneReason.CANCELED, o.remaining)
            return self.events[start:]
        self._place(cmd)
        return self.events[start:]

    def _place(self, c: PlaceOrder) -> None:
        if self._find(c.oid) is not None:
            self._done(c.oid, c.user, DoneReason.REJECTED, c.qty or 0, c.funds or 0, "duplicate order id")
            return
        if c.type == "market" and c.funds is not None:
            self._funds_buy(c)
            return
        assert c.qty is not None
        if c.type == "market":
            rest, stopped = self._match_qty(c.oid, c.user, c.side, None, c.qty, c.stp)
            if stopped:
                self._done(c.oid, c.user, DoneReason.CANCELED, rest, 0, STP_DETAIL)
            elif rest == 0:
                self._done(c.oid, c.user, DoneReason.FILLED, 0)
            else:
                self._done(c.oid, c.user, DoneReason.EXPIRED, rest, 0, "no more liquidity")
            return
        assert c.price is not None
        if c.post_only:
            if c.tif != "GTC":
                self._done(c.oid, c.user, DoneReason.REJECTED, c.qty, 0, "post-only requires GTC")
            elif self._best_maker(c.side, c.price) is not None:
                self._done(c.oid, c.user, DoneReason.REJECTED, c.qty, 0, "post-only order would cross")
            else:
                self._rest(c.oid, c.user, c.side, c.price, c.qty)
            return
        if c.tif == "FOK":
            # Dry run on a copy: FOK executes only if the whole quantity would fill.
            trial = ReferenceBook()
            trial.resting = copy.deepcopy(self.resting)
            rest, stopped = trial._match_qty(c.oid, c.user, c.side, c.price, c.qty, c.stp)
            if rest > 0 or stopped:
                self._done(c.oid, c.user, DoneReason.REJECTED, c.qty, 0, "fill-or-kill cannot fill")
                return
        rest, stopped = self._match_qty(c.oid, c.user, c.side, c.price, c.qty, c.stp)
        if stopped:
            self._done(c.oid, c.user, DoneReason.CANCELED, rest, 0, STP_DETAIL)
        elif rest == 0:
            self._done(c.oid, c.user, DoneReason.FILLED, 0)
        elif c.tif == "GTC":
            self._rest(c.oid, c.user, c.side, c.price, rest)
        else:
            self._done(c.oid, c.user, DoneReason.EXPIRED, rest)

    def _funds_buy(self, c: PlaceOrder) -> None:
        assert c.funds is not None
        funds = c.funds
        while funds > 0:
            maker = self._best_maker("buy", None)
            if maker is None:
                break
            lots = funds // maker.price
            if lots == 0:
                break
            if maker.user == c.user and c.stp != "none":
                if c.stp in ("cancel_maker", "cancel_both"):
                    self._cancel_maker(maker)
                if c.stp in ("cancel_taker", "cancel_both"):
                    self._done(c.oid, c.user, DoneReason.CANCELED, 0, funds, STP_DETAIL)
                    return
                continue
            fill = min(lots, maker.remaining)
            funds -= fill * maker.price
            self._trade(c.oid, c.user, "buy", maker, fill)
        if funds > 0 and self._best_maker("buy", None) is None:
            self._done(c.oid, c.user, DoneReason.EXPIRED, 0, funds, "no more liquidity")
        else:
            self._done(c.oid, c.user, DoneReason.FILLED, 0, funds)

    def depth(self, side: str) -> list[tuple[int, int]]:
        levels: dict[int, int] = {}
        for o in self.resting:
            if o.side == side:
                levels[o.price] = levels.get(o.price, 0) + o.remaining
        return sorted(levels.items(), reverse=(side == "buy"))
