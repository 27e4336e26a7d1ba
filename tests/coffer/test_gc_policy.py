"""coffer/gc_policy.py: cyclic collection between batches, with CPython's rule for the older
generations."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from coffer import gc_policy
from coffer.gc_policy import OLDER, SAFETY_YOUNG, YOUNG, between_batches, generation_due


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    """The test drives collections itself; the interpreter's setting comes back afterwards."""
    thresholds, enabled = gc.get_threshold(), gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()


def test_nothing_is_due_below_the_young_threshold() -> None:
    assert generation_due((0, 0, 0)) is None
    assert generation_due((YOUNG - 1, OLDER[0] + 5, OLDER[1] + 5)) is None


def test_young_then_middle_then_full_as_cpython_orders_them() -> None:
    assert generation_due((YOUNG, 0, 0)) == 0
    assert generation_due((YOUNG, OLDER[0], 0)) == 0  # due only past the threshold, as CPython
    assert generation_due((YOUNG, OLDER[0] + 1, 0)) == 1
    assert generation_due((YOUNG, OLDER[0] + 1, OLDER[1] + 1)) == 2
    assert generation_due((YOUNG, 0, OLDER[1] + 1)) == 2  # the oldest due generation first


def test_install_leaves_the_automatic_collector_as_a_safety_net() -> None:
    before = gc.get_threshold()
    try:
        gc_policy.install()
        assert gc.get_threshold() == (SAFETY_YOUNG, *OLDER)
        assert gc.isenabled()
    finally:
        gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_between_batches_frees_a_cycle_once_enough_objects_outlived_batches(no_automatic_gc: None) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # garbage only a cyclic collection frees
    freed: list[bool] = []
    ref = weakref.ref(a, lambda _r: freed.append(True))
    del a, b
    assert between_batches() is None  # few new objects: nothing collected, the cycle stays
    assert ref() is not None
    survivors = [[i] for i in range(YOUNG)]  # containers that outlive the batch
    assert between_batches() is not None
    assert freed == [True] and ref() is None
    assert gc.get_count()[0] < YOUNG  # counted again from (about) zero
    del survivors
