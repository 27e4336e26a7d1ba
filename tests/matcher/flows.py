"""Random command flows for the matcher tests and benchmarks' cross-checks (seeded, reproducible)."""

from __future__ import annotations

import random

from matcher.protocol import CancelOrder, Command, PlaceOrder, STPMode, TimeInForce

STP_MODES: tuple[STPMode, ...] = ("none", "cancel_taker", "cancel_maker", "cancel_both")
TIFS: tuple[TimeInForce, ...] = ("GTC", "GTC", "GTC", "IOC", "FOK")


def random_flow(rng: random.Random, n: int, *, users: int = 4, mid: int = 100, spread: int = 6,
                stp_modes: tuple[STPMode, ...] = STP_MODES, shard: int = 0, first_iid: int = 1) -> list[Command]:
    """`n` well-formed commands on a narrow price band so that orders cross often."""
    cmds: list[Command] = []
    next_oid = 1
    placed: list[tuple[int, int]] = []
    iid = first_iid
    for i in range(n):
        ts = 1_700_000_000_000 + i
        user = rng.randint(1, users)
        stp = rng.choice(stp_modes)
        r = rng.random()
        if r < 0.15 and placed:
            oid, owner = rng.choice(placed)
            # mostly the owner cancels; sometimes another user tries (must be rejected)
            cmds.append(CancelOrder(oid, owner if rng.random() < 0.9 else user, shard, iid, ts))
        elif r < 0.25:
            side = rng.choice(("buy", "sell"))
            if side == "buy" and rng.random() < 0.5:
                funds = rng.randint(1, 40 * mid)
                cmds.append(PlaceOrder(next_oid, user, "buy", "market", None, None, funds, "GTC", False, stp,
                                       shard, iid, ts))
            else:
                cmds.append(PlaceOrder(next_oid, user, side, "market", None, rng.randint(1, 25), None, "GTC",  # type: ignore[arg-type]
                                       False, stp, shard, iid, ts))
            placed.append((next_oid, user))
            next_oid += 1
        else:
            side = rng.choice(("buy", "sell"))
            price = rng.randint(mid - spread, mid + spread)
            tif = rng.choice(TIFS)
            post_only = tif == "GTC" and rng.random() < 0.1
            oid = next_oid
            if placed and rng.random() < 0.02:
                oid = rng.choice(placed)[0]  # a duplicate id: rejected while the first is live
            else:
                next_oid += 1
            cmds.append(PlaceOrder(oid, user, side, "limit", price, rng.randint(1, 12), None, tif, post_only,  # type: ignore[arg-type]
                                   stp, shard, iid, ts))
            placed.append((oid, user))
        iid += 1
    return cmds
