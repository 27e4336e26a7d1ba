"""The pure watcher core on plain data: hash chain, fork-point walk-back, confirmations, units, back-off."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchers.errors import InconsistentAnswerError, ReorgTooDeepError
from watchers.hashchain import ForkFinder, HashChain, confirmations, to_ledger_units
from watchers.model import BlockHeader
from watchers.retry import RetryPolicy, backoff_delay_s, retryable_status


def h(tag: str, height: int) -> str:
    return f"{tag}{height:063x}"[-64:]


def build(tag: str, lo: int, hi: int) -> list[BlockHeader]:
    return [BlockHeader(i, h(tag, i), h(tag, i - 1) if i > lo else None) for i in range(lo, hi + 1)]


def test_chain_extends_only_on_its_tip() -> None:
    chain = HashChain(keep=10)
    for header in build("a", 0, 5):
        chain.append(header)
    assert chain.tip == 5
    assert chain.extends(BlockHeader(6, h("a", 6), h("a", 5)))
    assert not chain.extends(BlockHeader(6, h("b", 6), h("b", 5)))  # parent is not our tip
    assert not chain.extends(BlockHeader(7, h("a", 7), h("a", 6)))  # gap
    with pytest.raises(InconsistentAnswerError):
        chain.append(BlockHeader(6, h("b", 6), h("b", 5)))


def test_chain_prunes_to_keep() -> None:
    chain = HashChain(keep=4)
    for header in build("a", 0, 20):
        chain.append(header)
    assert (chain.oldest, chain.tip) == (17, 20)
    assert chain.hash_at(16) is None


def test_fork_finder_walks_back_to_the_fork_point() -> None:
    local = {i: h("a", i) for i in range(0, 11)}
    remote = {i: (h("a", i) if i <= 6 else h("b", i)) for i in range(0, 13)}
    finder = ForkFinder(local, start_height=10)
    probed = []
    while (height := finder.next_height()) is not None:
        probed.append(height)
        finder.feed(height, remote[height])
    assert finder.fork_height == 6
    assert probed == [10, 9, 8, 7, 6]


def test_fork_finder_no_reorg_stops_at_once() -> None:
    local = {i: h("a", i) for i in range(5)}
    finder = ForkFinder(local, start_height=4)
    assert finder.feed(4, h("a", 4)) is True
    assert finder.fork_height == 4
    assert finder.next_height() is None


def test_fork_below_kept_blocks_is_too_deep() -> None:
    local = {i: h("a", i) for i in range(5, 10)}
    finder = ForkFinder(local, start_height=9)
    with pytest.raises(ReorgTooDeepError):
        while (height := finder.next_height()) is not None:
            finder.feed(height, h("b", height))


def test_fork_finder_rejects_out_of_order_feed() -> None:
    finder = ForkFinder({1: h("a", 1), 2: h("a", 2)}, start_height=2)
    with pytest.raises(ValueError):
        finder.feed(1, h("a", 1))


@given(st.integers(0, 300), st.integers(1, 60), st.integers(0, 60))
def test_fork_finder_finds_the_highest_common_block(length: int, depth: int, extra: int) -> None:
    tip = length + depth
    local = {i: h("a", i) for i in range(tip + 1)}
    fork = tip - depth
    remote = {i: (h("a", i) if i <= fork else h("b", i)) for i in range(tip + extra + 1)}
    finder = ForkFinder(local, start_height=tip)
    while (height := finder.next_height()) is not None:
        finder.feed(height, remote[height])
    assert finder.fork_height == fork
    chain = HashChain(keep=10_000, blocks=local.items())
    assert chain.rewind(fork) == list(range(fork + 1, tip + 1))
    assert chain.tip == fork


def test_confirmations() -> None:
    assert confirmations(100, 100) == 1
    assert confirmations(100, 105) == 6
    assert confirmations(101, 100) == 0


def test_units_round_down() -> None:
    # ETH: 18 chain decimals, 9 ledger decimals (gwei).
    assert to_ledger_units(1_000_000_000_999_999_999, 18, 9) == 1_000_000_000
    assert to_ledger_units(999_999_999, 18, 9) == 0
    assert to_ledger_units(12_345, 8, 8) == 12_345
    assert to_ledger_units(7, 2, 4) == 700
    with pytest.raises(ValueError):
        to_ledger_units(-1, 8, 8)


@given(st.integers(0, 10**30), st.integers(0, 18), st.integers(0, 18))
def test_units_never_overcredit(amount: int, chain_dec: int, ledger_dec: int) -> None:
    ledger = to_ledger_units(amount, chain_dec, ledger_dec)
    # ledger units back in chain units never exceed what arrived, and the loss is < one ledger unit
    back = ledger * 10**chain_dec
    assert back <= amount * 10**ledger_dec
    assert amount * 10**ledger_dec - back < 10**chain_dec


def test_backoff_grows_with_jitter_and_caps() -> None:
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=2.0)
    rng = random.Random(7)
    delays = [backoff_delay_s(a, policy, rng) for a in range(10)]
    for attempt, delay in enumerate(delays):
        cap = min(2.0, 0.1 * 2**attempt)
        assert cap / 2 <= delay <= cap
    assert len({round(d, 9) for d in delays}) == len(delays)  # jittered, not a fixed schedule
    assert backoff_delay_s(1000, policy, rng) <= 2.0


def test_retryable_statuses() -> None:
    assert retryable_status(429) and retryable_status(503) and retryable_status(500) and retryable_status(408)
    assert not retryable_status(404) and not retryable_status(400) and not retryable_status(200)
