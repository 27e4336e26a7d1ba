"""What the intake remembers between batches (ledger/intake_cache.py), pure: when it can serve a
batch's read, what it learns from a committed batch, how many orders it keeps."""

from __future__ import annotations

from ledger.intake_cache import BatchRead, IntakeCache, Known
from ledger.intake_protocol import (
    CancelAllRequest,
    CancelRequest,
    PlaceOrderRequest,
    Request,
    WithdrawRequest,
)

M = "BTC-USDT"


def _place(user: int, coid: str | None = None, market: str = M) -> PlaceOrderRequest:
    return PlaceOrderRequest("r", "", user, market, "buy", "limit", "10", "0.01", None, 1, client_order_id=coid)


def _read(users: set[int], balances: dict[tuple[int, str], list[int]], known: list[Known] | None = None,
          lowerings: int = 0) -> BatchRead:
    return BatchRead("1-0", 5, 3, [100, 101], users, balances, known or [], lowerings)


def _warm(max_orders: int = 10) -> IntakeCache:
    """A cache that committed one read batch: users 1 (USDT and BTC rows) and 2 (no rows), one
    order of user 1 (id 7, client order id 'k'), ids 1000..1009 drawn ahead."""
    cache = IntakeCache(max_orders=max_orders)
    read = _read({1, 2}, {(1, "USDT"): [500, 0], (1, "BTC"): [9, 1]}, [Known(7, 1, M, "k", "open")])
    cache.committed(read, read.balances, [(1, "USDT", 400, 100)], [], 0, ("2-0", 6, 6))
    cache.add_ids(range(1000, 1010))
    return cache


def test_a_warm_cache_serves_a_batch_of_places_and_cancels_it_knows() -> None:
    cache = _warm()
    reqs: list[Request] = [_place(1, "n"), CancelRequest("c", "", 1, M, 1, client_order_id="k"),
                           CancelRequest("c2", "", 1, M, 1, client_order_id="n"), _place(2), _place(1, "k")]
    read = cache.serve(reqs, {1, 2}, 3, [M])
    assert read is not None and read.from_cache
    assert (read.stream_id, read.last_iid, read.batch_first_iid) == ("2-0", 6, 6)
    assert read.oids == [1000, 1001, 1002] and read.users == {1, 2}
    # the write's returned row wins over the read's; a user without rows is known with none
    assert read.balances == {(1, "USDT"): [400, 100], (1, "BTC"): [9, 1]}
    assert [k.id for k in read.known] == [7, 7]  # named by the cancel and by the duplicate place
    read.balances[(1, "USDT")][0] = 0  # the batch's copy, not the cache's rows
    assert cache.balances[1]["USDT"] == [400, 100]


def test_it_serves_nothing_it_cannot_vouch_for() -> None:
    cache = _warm()
    assert cache.serve([_place(3)], {3}, 1, [M]) is None  # a user never read
    assert cache.serve([_place(1, market="X-Y")], {1}, 1, [M]) is None  # a market it does not know
    assert cache.serve([CancelRequest("c", "", 1, M, 1, order_id=8)], {1}, 0, [M]) is None  # an order never seen
    assert cache.serve([CancelRequest("c", "", 1, M, 1, client_order_id="zz")], {1}, 0, [M]) is None
    assert cache.serve([CancelAllRequest("a", "", 1, 1, market=M)], {1}, 0, [M]) is None  # needs every live order
    assert cache.serve([WithdrawRequest("w", "", 1, "BTC", "1", "addr", 1)], {1}, 0, [M]) is None  # locked row
    assert cache.serve([_place(1)] * 11, {1}, 11, [M]) is None  # more places than ids drawn ahead
    # a cancel by a client order id that a LATER place carries is not the batch's own
    assert cache.serve([CancelRequest("c", "", 1, M, 1, client_order_id="n"), _place(1, "n")], {1}, 1, [M]) is None
    assert IntakeCache().serve([_place(1)], {1}, 0, [M]) is None  # nothing committed yet: no offset


def test_committing_moves_past_the_ids_used_and_learns_the_new_orders() -> None:
    cache = _warm()
    read = cache.serve([_place(1, "n"), _place(1, "m")], {1}, 2, [M])
    assert read is not None
    new = [Known(1000, 1, M, "n", "pending")]  # the second place was refused
    cache.committed(read, {(1, "USDT"): [300, 200]}, [], new, 1, ("3-0", 7, 7))
    assert cache.ids_left == 9 and cache.offset == ("3-0", 7, 7)
    assert cache.by_coid[(1, "n")].id == 1000 and cache.balances[1]["USDT"] == [300, 200]
    nxt = cache.serve([_place(1, "m")], {1}, 1, [M])
    assert nxt is not None and nxt.oids == [1001] and nxt.known == []


def test_a_read_under_a_new_reversal_count_forgets_every_remembered_balance() -> None:
    cache = _warm()
    later = _read({2}, {(2, "USDT"): [5, 0]}, lowerings=1)
    cache.committed(later, later.balances, [], [], 0, ("3-0", 6, 6))
    assert cache.lowerings == 1 and set(cache.balances) == {2}  # user 1's rows were read under 0
    assert cache.serve([_place(1)], {1}, 1, [M]) is None


def test_it_keeps_at_most_max_orders_the_oldest_going_first() -> None:
    cache = _warm(max_orders=3)
    read = cache.serve([], set(), 0, [M])
    assert read is not None
    new = [Known(i, 1, M, f"c{i}", "pending") for i in range(1000, 1003)]
    cache.committed(read, {}, [], new, 3, ("3-0", 9, 9))
    assert list(cache.by_id) == [1000, 1001, 1002]  # order 7 went first
    assert (1, "k") not in cache.by_coid and (1, "c1000") in cache.by_coid


def test_cancel_targets_it_does_not_remember_are_listed_and_once_looked_up_served() -> None:
    cache = _warm()
    reqs: list[Request] = [CancelRequest("a", "", 1, M, 1, order_id=7), CancelRequest("b", "", 1, M, 1, order_id=8),
                           CancelRequest("c", "", 1, M, 1, client_order_id="old"),
                           CancelRequest("d", "", 1, M, 1, client_order_id="gone")]
    assert cache.serve(reqs, {1}, 0, [M]) is None
    assert cache.missing == ([8], [(1, "old"), (1, "gone")])
    cache.learn([Known(8, 1, M, None, "open"), Known(9, 1, M, "old", "filled")])
    assert cache.serve(reqs, {1}, 0, [M]) is None  # "gone" is neither remembered nor known to be absent
    read = cache.serve(reqs, {1}, 0, [M], absent=frozenset({(1, "gone")}))
    assert read is not None and [k.id for k in read.known] == [7, 8, 9]  # the batch rejects "d" as unknown


def test_orders_looked_up_for_a_batch_do_not_push_out_what_the_same_batch_needs() -> None:
    cache = _warm(max_orders=1)  # remembers order 7 only
    reqs: list[Request] = [CancelRequest("a", "", 1, M, 1, order_id=7), CancelRequest("b", "", 1, M, 1, order_id=8)]
    assert cache.serve(reqs, {1}, 0, [M]) is None
    assert cache.missing == ([8], [])
    cache.learn([Known(8, 1, M, None, "open")])
    read = cache.serve(reqs, {1}, 0, [M])
    assert read is not None and [k.id for k in read.known] == [7, 8]
    cache.committed(read, {}, [], [], 0, ("3-0", 6, 6))
    assert len(cache.by_id) == 1  # evicted once the batch is done
