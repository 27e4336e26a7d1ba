"""`coffer matcher replay`: JSON lines of orders in, JSON lines of engine events out.

Operators use it to audit the engine and acceptance checks use it, so the format is a
contract (issue 7). Prices and quantities are decimal strings converted to integer ticks and
lots with `--tick` and `--lot` (a value off the tick or lot is an error, never rounded);
market-buy `funds` are converted with tick x lot. Every output line carries the engine's
sequence number; a line that cannot be applied (bad JSON, bad field, off tick/lot) gives an
`error` event, which also takes a sequence number, and the replay goes on. Cancels name only
the order id: the replay cancels on behalf of the user that placed it (an optional `"user"`
overrides). The event `ts_ms` inside the engine is the input line number (no clock).

Output events: `trade` (taker, maker, price, qty), `open` (id, remaining), `done` (id,
reason, remaining; plus `funds_remaining` for a market buy by funds) and `error` (line,
reason) -- also for a cancel the engine refuses (order not on the book), which carries the
engine's own seq for that refusal and the cancelled `id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

from matcher.engine import STP_CODES, Engine
from matcher.errors import ReplayError
from matcher.protocol import CancelOrder, CancelRejected, Command, Done, Event, Opened, PlaceOrder, STPMode, Trade


class _LineError(Exception):
    """One input line cannot be applied; the message becomes the error event's reason."""


def parse_step(text: str, name: str) -> Decimal:
    """A positive decimal step (tick or lot) from a flag value."""
    try:
        step = Decimal(text)
    except InvalidOperation:
        raise ReplayError(f"--{name} must be a decimal number such as 0.01, got {text!r}") from None
    if not step.is_finite() or step <= 0:
        raise ReplayError(f"--{name} must be a positive decimal number, got {text!r}")
    return step


def _fmt(units: int, step: Decimal) -> str:
    with localcontext() as ctx:
        ctx.prec = 80
        value = (Decimal(units) * step).normalize()
    return format(value, "f")


class Replayer:
    """Turns replay input lines into engine commands and engine events into output dicts."""

    def __init__(self, tick: Decimal, lot: Decimal, stp: STPMode = "none") -> None:
        if stp not in STP_CODES:
            raise ReplayError(f"--stp must be one of {', '.join(STP_CODES)}, got {stp!r}")
        self.tick = tick
        self.lot = lot
        self.notional = tick * lot
        self.stp: STPMode = stp
        self.engine = Engine()
        self.owners: dict[int, int] = {}
        self.funds_orders: set[int] = set()

    def _units(self, raw: object, step: Decimal, what: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, (str, int, Decimal)):
            raise _LineError(f"{what} must be a decimal string")
        try:
            value = Decimal(raw)
        except InvalidOperation:
            raise _LineError(f"{what} {raw!r} is not a decimal number") from None
        if not value.is_finite() or value <= 0:
            raise _LineError(f"{what} must be positive, got {raw}")
        with localcontext() as ctx:
            ctx.prec = 80
            units = value / step
            if units != units.to_integral_value():
                raise _LineError(f"{what} {raw} is not a multiple of {step.normalize():f}")
        return int(units)

    @staticmethod
    def _int(obj: dict[str, Any], key: str) -> int:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _LineError(f"{key} must be an integer")
        return value

    def command(self, obj: object, line_no: int) -> Command:
        if not isinstance(obj, dict):
            raise _LineError("line is not a JSON object")
        op = obj.get("op")
        oid = self._int(obj, "id")
        if op == "cancel":
            user = self._int(obj, "user") if "user" in obj else self.owners.get(oid, 0)
            return CancelOrder(oid, user, 0, line_no, line_no)
        if op not in ("limit", "market"):
            raise _LineError(f"op must be limit, market or cancel, got {op!r}")
        user = self._int(obj, "user")
        side = obj.get("side")
        if side not in ("buy", "sell"):
            raise _LineError(f"side must be buy or sell, got {side!r}")
        if op == "limit":
            tif = obj.get("tif", "GTC")
            if tif not in ("GTC", "IOC", "FOK"):
                raise _LineError(f"tif must be GTC, IOC or FOK, got {tif!r}")
            post_only = obj.get("post_only", False)
            if not isinstance(post_only, bool):
                raise _LineError("post_only must be true or false")
            price = self._units(obj.get("price"), self.tick, "price")
            qty = self._units(obj.get("qty"), self.lot, "qty")
            return PlaceOrder(oid, user, side, "limit", price, qty, None, tif, post_only, self.stp, 0, line_no, line_no)
        has_qty, has_funds = "qty" in obj, "funds" in obj
        if has_funds and side != "buy":
            raise _LineError("only a market buy may give funds")
        if has_qty == has_funds:
            raise _LineError("a market order gives exactly one of qty or funds")
        if has_funds:
            funds = self._units(obj["funds"], self.notional, "funds")
            return PlaceOrder(oid, user, "buy", "market", None, None, funds, "GTC", False, self.stp, 0, line_no,
                              line_no)
        qty = self._units(obj["qty"], self.lot, "qty")
        return PlaceOrder(oid, user, side, "market", None, qty, None, "GTC", False, self.stp, 0, line_no, line_no)

    def event(self, ev: Event, line_no: int) -> dict[str, Any]:
        if isinstance(ev, Trade):
            return {"event": "trade", "seq": ev.seq, "taker": ev.taker, "maker": ev.maker,
                    "price": _fmt(ev.price, self.tick), "qty": _fmt(ev.qty, self.lot)}
        if isinstance(ev, Opened):
            return {"event": "open", "seq": ev.seq, "id": ev.oid, "remaining": _fmt(ev.remaining, self.lot)}
        if isinstance(ev, Done):
            out: dict[str, Any] = {"event": "done", "seq": ev.seq, "id": ev.oid, "reason": ev.reason.value,
                                   "remaining": _fmt(ev.remaining, self.lot)}
            if ev.oid in self.funds_orders:
                out["funds_remaining"] = _fmt(ev.funds_remaining, self.notional)
            return out
        assert isinstance(ev, CancelRejected)
        return {"event": "error", "seq": ev.seq, "line": line_no, "id": ev.oid,
                "reason": f"cancel refused: {ev.reason}"}

    def line(self, text: str, line_no: int) -> list[dict[str, Any]]:
        """The output events of one input line (blank lines give none)."""
        if not text.strip():
            return []
        try:
            obj = json.loads(text, parse_float=Decimal)
            cmd = self.command(obj, line_no)
        except (ValueError, _LineError) as exc:
            reason = f"invalid JSON: {exc}" if isinstance(exc, ValueError) else str(exc)
            return [{"event": "error", "seq": self.engine.next_seq(), "line": line_no, "reason": reason}]
        if isinstance(cmd, PlaceOrder):
            if cmd.funds is not None:
                self.funds_orders.add(cmd.oid)
            events = self.engine.apply(cmd)
            if cmd.oid not in self.owners or not any(
                isinstance(e, Done) and e.oid == cmd.oid and e.detail == "duplicate order id" for e in events
            ):
                self.owners[cmd.oid] = cmd.user
        else:
            events = self.engine.apply(cmd)
        return [self.event(e, line_no) for e in events]

    def run(self, lines: Iterable[str]) -> Iterator[dict[str, Any]]:
        for line_no, text in enumerate(lines, start=1):
            yield from self.line(text, line_no)
