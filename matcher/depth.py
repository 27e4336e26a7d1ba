"""L2 depth rebuilt from engine events: price level -> quantity per side, with change tracking.

A `DepthBook` follows `match:out` events in wire form (dicts, see `protocol._to_wire`):
`open` adds the resting quantity at its level, `trade` takes the filled quantity off the
maker's level, and a `done` of an order that rested takes its unfilled remainder off (it
remembers each resting order's side and price, because `done` carries neither). A rejected
`done` never touches the book (a duplicate id must not remove the live order). The update id
is the last event seq applied, so a snapshot (`top`) plus diffs covering seqs `U..u` let a
client keep a local book and detect a gap (next diff must have `U <= last_u + 1 <= u`).
Quantities in lots, prices in ticks. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any


class DepthBook:
    __slots__ = ("asks", "bids", "changed_asks", "changed_bids", "resting", "seq")

    def __init__(self) -> None:
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.resting: dict[int, tuple[bool, int]] = {}
        self.seq = 0
        self.changed_bids: set[int] = set()
        self.changed_asks: set[int] = set()

    def _move(self, is_buy: bool, price: int, delta: int) -> None:
        levels = self.bids if is_buy else self.asks
        qty = levels.get(price, 0) + delta
        if qty:
            levels[price] = qty
        else:
            levels.pop(price, None)
        (self.changed_bids if is_buy else self.changed_asks).add(price)

    def apply(self, row: dict[str, Any]) -> None:
        kind = row["e"]
        if kind == "open":
            is_buy = row["side"] == "buy"
            self.resting[row["oid"]] = (is_buy, row["price"])
            self._move(is_buy, row["price"], row["remaining"])
        elif kind == "trade":
            self._move(row["taker_side"] == "sell", row["price"], -row["qty"])
        elif kind == "done" and row["reason"] != "rejected":
            placed = self.resting.pop(row["oid"], None)
            if placed is not None and row["remaining"]:
                self._move(placed[0], placed[1], -row["remaining"])
        self.seq = row["seq"]

    def top(self, levels: int) -> tuple[list[list[int]], list[list[int]]]:
        """Best `levels` bids (highest first) and asks (lowest first) as [price_ticks, qty_lots]."""
        bids = sorted(self.bids.items(), reverse=True)[:levels]
        asks = sorted(self.asks.items())[:levels]
        return [list(b) for b in bids], [list(a) for a in asks]

    def take_changes(self) -> tuple[list[list[int]], list[list[int]]]:
        """Levels changed since the last call as [price, qty] (qty 0 = level gone), and reset."""
        bids = [[p, self.bids.get(p, 0)] for p in sorted(self.changed_bids, reverse=True)]
        asks = [[p, self.asks.get(p, 0)] for p in sorted(self.changed_asks)]
        self.changed_bids.clear()
        self.changed_asks.clear()
        return bids, asks

    def dump(self) -> dict[str, Any]:
        return {"seq": self.seq, "resting": [[oid, int(b), p] for oid, (b, p) in self.resting.items()],
                "bids": list(self.bids.items()), "asks": list(self.asks.items())}

    @classmethod
    def load(cls, data: dict[str, Any]) -> DepthBook:
        book = cls()
        book.seq = int(data["seq"])
        book.resting = {oid: (bool(b), p) for oid, b, p in data["resting"]}
        book.bids = {p: q for p, q in data["bids"]}
        book.asks = {p: q for p, q in data["asks"]}
        return book
