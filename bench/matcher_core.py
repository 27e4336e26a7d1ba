"""Benchmark: the in-process matching engine on a seeded mixed flow (no I/O).

The flow is about 60% resting limit orders (placed away from the touch), 25% crossing
orders (limit IOC/GTC through the touch and market orders) and 15% cancels of earlier
resting orders, from a fixed seed. Commands are built before the clock starts. Three figures:

- `orders_per_s`: `Engine.execute` on protocol `PlaceOrder`/`CancelOrder` commands
  (validation + matching, events as the core's tuples);
- `orders_per_s_with_events`: `Engine.apply`, which also builds the protocol event dataclasses;
- `orders_per_s_wire`: `Engine.apply_wire`, events as the wire dicts of `match:out`;
- `orders_per_s_runner` / `runner_cpu_us_per_order`: the stream runner's path without Redis:
  `match:in` batches of 100 (encoded before the clock starts) decoded into wire commands,
  watermark-deduped, applied with `Engine.apply_into` and the events encoded in chunks of 5,000
  (CPU time, best of N: steadier than wall clock on a shared machine);
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
from matcher.protocol import (
    CancelOrder,
    Command,
    PlaceOrder,
    Side,
    TimeInForce,
    WireEvent,
    decode_wire_commands,
    encode_batch,
)


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


def _cpu_runner_path(raws: list[bytes]) -> float:
    """CPU seconds of the runner's per-entry work (see the module doc) over `raws`."""
    engine = Engine()
    wm: dict[int, int] = {}
    rows: list[WireEvent] = []
    gc.collect()
    gc.freeze()  # GC stays on (the book's orders are tracked) but skips the flow, which a runner does not hold
    t0 = time.process_time()
    for n, raw in enumerate(raws, start=1):
        for cmd in decode_wire_commands(raw):
            if cmd.iid <= wm.get(cmd.shard, 0):
                continue
            wm[cmd.shard] = cmd.iid
            engine.apply_into(cmd, rows)
        if n % 50 == 0 or n == len(raws):  # one XREAD of 50 entries -> one commit
            for i in range(0, len(rows), 5000):
                encode_batch(rows[i:i + 5000])
            rows = []
    dt = time.process_time() - t0
    gc.unfreeze()
    return dt


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
    raws = [encode_batch(cmds[i:i + 100]) for i in range(0, n, 100)]
    best_runner = min(_cpu_runner_path(raws) for _ in range(args.repeat))
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
        "orders_per_s_runner": round(n / best_runner),
        "runner_cpu_us_per_order": round(best_runner / n * 1e6, 3),
        "orders_per_s_book": round(n / best_book),
        "best_of": args.repeat,
        "note": "2-core machine shared with the whole team while measured; figures are depressed",
    }))


if __name__ == "__main__":
    main()
