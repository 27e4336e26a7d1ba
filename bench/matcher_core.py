"""Benchmark: the in-process matching engine on a seeded mixed flow (no I/O).

The flow is about 60% resting limit orders (placed away from the touch), 25% crossing
orders (limit IOC/GTC through the touch and market orders) and 15% cancels of earlier
resting orders, from a fixed seed. Commands are built before the clock starts. Three figures:

- `orders_per_s`: `Engine.execute` on protocol `PlaceOrder`/`CancelOrder` commands
  (validation + matching, events as the core's tuples);
- `orders_per_s_with_events`: `Engine.apply`, which also builds the protocol event dataclasses;
- `orders_per_s_wire`: `Engine.apply_wire`, events as the wire dicts the runner encodes (its path);
- `orders_per_s_book`: the `OrderBook` core called directly with plain arguments.

Run: `python -m bench.matcher_core [--orders N] [--seed S]`; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import time
from typing import Any

from matcher.book import GTC, IOC, STP_NONE, OrderBook
from matcher.engine import Engine
from matcher.protocol import CancelOrder, Command, PlaceOrder, Side, TimeInForce


def mixed_flow(n: int, seed: int) -> list[Command]:
    rng = random.Random(seed)
    mid = 100_000
    cmds: list[Command] = []
    resting: list[tuple[int, int]] = []
    oid = 0
    for i in range(n):
        r = rng.random()
        user = rng.randint(1, 1000)
        if r < 0.15 and resting:
            j = rng.randrange(len(resting))
            resting[j], resting[-1] = resting[-1], resting[j]
            victim, owner = resting.pop()
            cmds.append(CancelOrder(victim, owner, 0, i, i))
            continue
        oid += 1
        side: Side = "buy" if rng.random() < 0.5 else "sell"
        if r < 0.75:
            offset = rng.randint(1, 60)
            price = mid - offset if side == "buy" else mid + offset
            cmds.append(PlaceOrder(oid, user, side, "limit", price, rng.randint(1, 20), None, "GTC", False, "none",
                                   0, i, i))
            resting.append((oid, user))
        elif r < 0.95:
            through = rng.randint(0, 10)
            price = mid + through if side == "buy" else mid - through
            tif: TimeInForce = "IOC" if rng.random() < 0.5 else "GTC"
            cmds.append(PlaceOrder(oid, user, side, "limit", price, rng.randint(1, 30), None, tif, False, "none",
                                   0, i, i))
            if tif == "GTC":
                resting.append((oid, user))
        else:
            cmds.append(PlaceOrder(oid, user, side, "market", None, rng.randint(1, 30), None, "GTC", False, "none",
                                   0, i, i))
    return cmds


def _time_engine(cmds: list[Command], with_events: bool, wire: bool = False) -> tuple[float, int]:
    engine = Engine()
    gc.collect()
    gc.disable()
    try:
        if wire:
            apply_wire = engine.apply_wire
            n_events = 0
            t0 = time.perf_counter()
            for cmd in cmds:
                n_events += len(apply_wire(cmd))
            dt = time.perf_counter() - t0
        elif with_events:
            apply = engine.apply
            n_events = 0
            t0 = time.perf_counter()
            for cmd in cmds:
                n_events += len(apply(cmd))
            dt = time.perf_counter() - t0
        else:
            out: list[Any] = []
            execute = engine.execute
            t0 = time.perf_counter()
            for cmd in cmds:
                execute(cmd, out)
                if len(out) > 10_000:
                    out.clear()
            dt = time.perf_counter() - t0
            n_events = 0
    finally:
        gc.enable()
    return dt, n_events


def _time_book(cmds: list[Command]) -> float:
    rows: list[tuple[Any, ...]] = []
    for c in cmds:
        if isinstance(c, CancelOrder):
            rows.append((0, c.oid, c.user))
        elif c.type == "limit":
            rows.append((1, c.oid, c.user, c.side == "buy", c.price, c.qty, IOC if c.tif == "IOC" else GTC))
        else:
            rows.append((2, c.oid, c.user, c.side == "buy", c.qty))
    book = OrderBook()
    out: list[Any] = []
    place_limit, place_market, cancel = book.place_limit, book.place_market, book.cancel
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for row in rows:
            kind = row[0]
            if kind == 1:
                place_limit(out, row[1], row[2], row[3], row[4], row[5], row[6], False, STP_NONE)
            elif kind == 0:
                cancel(out, row[1], row[2])
            else:
                place_market(out, row[1], row[2], row[3], row[4], STP_NONE)
            if len(out) > 10_000:
                out.clear()
        return time.perf_counter() - t0
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    cmds = mixed_flow(args.orders, args.seed)
    n = len(cmds)
    best_exec = min(_time_engine(cmds, False)[0] for _ in range(args.repeat))
    best_events, n_events = min(_time_engine(cmds, True) for _ in range(args.repeat))
    best_wire = min(_time_engine(cmds, False, wire=True)[0] for _ in range(args.repeat))
    best_book = min(_time_book(cmds) for _ in range(args.repeat))
    kinds = {"cancel": sum(isinstance(c, CancelOrder) for c in cmds)}
    print(json.dumps({
        "bench": "matcher_core",
        "orders": n,
        "seed": args.seed,
        "cancel_share": round(kinds["cancel"] / n, 3),
        "events": n_events,
        "orders_per_s": round(n / best_exec),
        "orders_per_s_with_events": round(n / best_events),
        "orders_per_s_wire": round(n / best_wire),
        "orders_per_s_book": round(n / best_book),
        "best_of": args.repeat,
        "note": "2-core machine shared with the whole team while measured; figures are depressed",
    }))


if __name__ == "__main__":
    main()
