"""A deliberately naive in-memory ledger, the reference the real ledger is compared with.

It is written from the rules in plain terms, without `ledger.arithmetic`: a buyer pays
price x qty in quote and receives qty in base minus ceil(fee); a seller the reverse; a
limit buy reserves at its limit and gets the difference back per fill; an order that
finishes gives back what it still reserves. Balances are dicts of exact ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matcher.protocol import Done, Event, Opened, Trade


@dataclass
class MMarket:
    base: str
    quote: str
    bupl: int
    qutl: int
    min_notional: int
    maker_bps: int
    taker_bps: int


@dataclass
class MOrder:
    user: int
    side: str
    type: str
    price: int | None
    reserved: int  # what it still holds
    asset: str


def ceil_fee(amount: int, bps: int) -> int:
    q, r = divmod(amount * bps, 10_000)
    return q + (1 if r else 0)


@dataclass
class Model:
    avail: dict[tuple[int, str], int] = field(default_factory=dict)
    frozen: dict[tuple[int, str], int] = field(default_factory=dict)
    orders: dict[int, MOrder] = field(default_factory=dict)
    fees: dict[str, int] = field(default_factory=dict)
    deposits: dict[str, int] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)
    holds: dict[int, tuple[int, str, int, int]] = field(default_factory=dict)  # wid -> user, asset, amount, fee

    def add(self, user: int, asset: str, d_avail: int = 0, d_frozen: int = 0) -> None:
        self.avail[(user, asset)] = self.avail.get((user, asset), 0) + d_avail
        self.frozen[(user, asset)] = self.frozen.get((user, asset), 0) + d_frozen
        assert self.frozen[(user, asset)] >= 0

    def negative(self, user: int) -> bool:
        return any(v < 0 for (u, _), v in self.avail.items() if u == user)

    def deposit(self, user: int, asset: str, amount: int) -> None:
        self.add(user, asset, amount)
        self.deposits[asset] = self.deposits.get(asset, 0) + amount

    def reverse(self, user: int, asset: str, amount: int) -> None:
        self.add(user, asset, -amount)
        self.deposits[asset] -= amount

    def can_place(self, m: MMarket, user: int, side: str, type: str, price: int | None, qty: int | None,
                  funds: int | None) -> tuple[str, int] | None:
        """(asset, amount) to reserve, or None when the ledger must reject."""
        if side == "buy":
            need = price * qty * m.qutl if type == "limit" else funds * m.qutl  # type: ignore[operator]
            asset, notional = m.quote, need
        else:
            need = qty * m.bupl  # type: ignore[operator]
            asset = m.base
            notional = price * qty * m.qutl if type == "limit" else None  # type: ignore[operator]
        if notional is not None and notional < m.min_notional:
            return None
        if self.negative(user) or need > self.avail.get((user, asset), 0) or need <= 0:
            return None
        return asset, need

    def place(self, oid: int, m: MMarket, user: int, side: str, type: str, price: int | None, asset: str,
              need: int) -> None:
        self.add(user, asset, -need, need)
        self.orders[oid] = MOrder(user, side, type, price, need, asset)

    def on_event(self, m: MMarket, e: Event) -> None:
        if isinstance(e, Trade):
            b_oid, s_oid = (e.taker, e.maker) if e.taker_side == "buy" else (e.maker, e.taker)
            b, s = self.orders[b_oid], self.orders[s_oid]
            cost = e.price * e.qty * m.qutl
            base = e.qty * m.bupl
            reserved = b.price * e.qty * m.qutl if b.type == "limit" else cost  # type: ignore[operator]
            b.reserved -= reserved
            s.reserved -= base
            assert b.reserved >= 0 and s.reserved >= 0
            bfee = ceil_fee(base, m.taker_bps if e.taker_side == "buy" else m.maker_bps)
            sfee = ceil_fee(cost, m.taker_bps if e.taker_side == "sell" else m.maker_bps)
            self.add(b.user, m.quote, reserved - cost, -reserved)
            self.add(b.user, m.base, base - bfee)
            self.add(s.user, m.base, 0, -base)
            self.add(s.user, m.quote, cost - sfee)
            self.fees[m.base] = self.fees.get(m.base, 0) + bfee
            self.fees[m.quote] = self.fees.get(m.quote, 0) + sfee
        elif isinstance(e, Done):
            o = self.orders[e.oid]
            self.add(o.user, o.asset, o.reserved, -o.reserved)
            o.reserved = 0
        elif isinstance(e, Opened):
            pass

    def hold(self, wid: int, user: int, asset: str, amount: int, fee: int) -> bool:
        if self.negative(user) or amount > self.avail.get((user, asset), 0):
            return False
        self.add(user, asset, -amount, amount)
        self.holds[wid] = (user, asset, amount, fee)
        return True

    def settle_withdrawal(self, wid: int) -> None:
        user, asset, amount, fee = self.holds.pop(wid)
        self.add(user, asset, 0, -amount)
        self.fees[asset] = self.fees.get(asset, 0) + fee
        self.withdrawn[asset] = self.withdrawn.get(asset, 0) + amount - fee

    def release_withdrawal(self, wid: int) -> None:
        user, asset, amount, _fee = self.holds.pop(wid)
        self.add(user, asset, amount, -amount)

    def balances(self) -> dict[tuple[int, str], tuple[int, int]]:
        keys = set(self.avail) | set(self.frozen)
        out = {k: (self.avail.get(k, 0), self.frozen.get(k, 0)) for k in keys}
        return {k: v for k, v in out.items() if v != (0, 0)}

    def conserved(self) -> bool:
        assets = {a for _, a in self.avail} | set(self.deposits)
        for a in assets:
            users = sum(v for (_, x), v in self.avail.items() if x == a) + sum(
                v for (_, x), v in self.frozen.items() if x == a)
            if users + self.fees.get(a, 0) != self.deposits.get(a, 0) - self.withdrawn.get(a, 0):
                return False
        return True
