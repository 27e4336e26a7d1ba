"""The pure reorg core: the recent block-hash chain, fork-point walk-back, confirmations, units.

The watcher keeps the hashes of its most recent blocks. A new block must name the watcher's
tip as its parent; if it does not, the watcher walks back height by height comparing its
hashes with the node's until they agree: that height is the fork point, and everything above
it is orphaned. `ForkFinder` is that walk as a step-by-step state machine (the daemon feeds
it the node's hashes), so it is tested on plain data. No I/O in this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from watchers.errors import InconsistentAnswerError, ReorgTooDeepError
from watchers.model import BlockHeader


class HashChain:
    """Heights -> hashes of the most recent `keep` blocks, contiguous up to the tip."""

    def __init__(self, keep: int = 1000, blocks: Iterable[tuple[int, str]] = ()) -> None:
        if keep < 2:
            raise ValueError("keep must be >= 2")
        self.keep = keep
        self._hashes: dict[int, str] = {}
        for height, block_hash in sorted(blocks):
            self._hashes[height] = block_hash
        self._prune()

    @property
    def tip(self) -> int | None:
        return max(self._hashes) if self._hashes else None

    @property
    def oldest(self) -> int | None:
        return min(self._hashes) if self._hashes else None

    def hash_at(self, height: int) -> str | None:
        return self._hashes.get(height)

    def as_mapping(self) -> Mapping[int, str]:
        return dict(self._hashes)

    def extends(self, header: BlockHeader) -> bool:
        """True if `header` is the next block on top of our tip (or the chain is empty)."""
        tip = self.tip
        if tip is None:
            return True
        return header.height == tip + 1 and header.parent_hash == self._hashes[tip]

    def append(self, header: BlockHeader) -> None:
        if not self.extends(header):
            raise InconsistentAnswerError(
                f"block {header.block_hash} at {header.height} does not extend our tip {self.tip}"
            )
        self._hashes[header.height] = header.block_hash
        self._prune()

    def rewind(self, fork_height: int) -> list[int]:
        """Drop every block above `fork_height`; returns the dropped heights (ascending)."""
        dropped = sorted(h for h in self._hashes if h > fork_height)
        for h in dropped:
            del self._hashes[h]
        return dropped

    def _prune(self) -> None:
        tip = self.tip
        if tip is None:
            return
        for h in [h for h in self._hashes if h <= tip - self.keep]:
            del self._hashes[h]


class ForkFinder:
    """Walk back from `start_height` to the highest height where our hash equals the node's.

    Usage: `while (h := f.next_height()) is not None: if f.feed(h, node_hash_at(h)): break`;
    then `f.fork_height`. Raises ReorgTooDeepError when our oldest kept block disagrees too.
    """

    def __init__(self, local: Mapping[int, str], start_height: int) -> None:
        self._local = dict(local)
        self._next: int | None = start_height
        self.fork_height: int | None = None
        self.probes = 0

    def next_height(self) -> int | None:
        if self.fork_height is not None:
            return None
        return self._next

    def feed(self, height: int, node_hash: str) -> bool:
        if height != self._next:
            raise ValueError(f"expected the node's hash at {self._next}, got {height}")
        self.probes += 1
        ours = self._local.get(height)
        if ours is None:
            raise ReorgTooDeepError(f"reorg reaches below height {height + 1}, the oldest block we keep")
        if ours == node_hash:
            self.fork_height = height
            return True
        if height == 0 or (height - 1) not in self._local:
            raise ReorgTooDeepError(f"reorg reaches below height {height}, the oldest block we keep")
        self._next = height - 1
        return False


def confirmations(block_height: int, tip_height: int) -> int:
    """Blocks on top of and including `block_height`; 0 if the block is above the tip."""
    if block_height > tip_height:
        return 0
    return tip_height - block_height + 1


def to_ledger_units(amount_chain: int, chain_decimals: int, ledger_decimals: int) -> int:
    """Chain units -> ledger units, rounding down: a remainder below one ledger unit is not credited."""
    if amount_chain < 0:
        raise ValueError("amounts are never negative")
    if chain_decimals >= ledger_decimals:
        return int(amount_chain // 10 ** (chain_decimals - ledger_decimals))
    return int(amount_chain * 10 ** (ledger_decimals - chain_decimals))
