"""When the batch consumers (ledger intake and settlement, matcher) collect reference cycles:
between batches, not inside them.

CPython's cyclic collector starts a young-generation collection when the net count of new
container objects passes a threshold. A consumer's batch keeps everything it decodes and builds
alive until the batch ends, so a collection started inside a batch scans objects that are all
still in use, moves them to an older generation, and scans them there again; none of it is
garbage (the collections seen in `python -m bench.pipeline` freed nothing). Between two batches
the batch's objects are gone (reference counting freed them), and what is left young is the
little that outlives a batch (remembered orders, resting orders, tasks).

So a consumer process sets the automatic threshold high (`SAFETY_YOUNG`: a batch that big still
gets collected inside) and calls `between_batches()` after each batch, which collects once the
objects that outlived batches reach `YOUNG`, with CPython's own rule for the older generations.
Pure policy on the interpreter's counters; no I/O.
"""

from __future__ import annotations

import gc

YOUNG = 50_000  # net new objects left between batches that start a collection
SAFETY_YOUNG = 1_000_000  # the automatic threshold, for a batch that never ends
OLDER = (20, 100)  # young collections per middle one, middle ones per full one (as before)


def install() -> None:
    """Make this process collect between batches (the automatic collector only as a safety net)."""
    gc.set_threshold(SAFETY_YOUNG, *OLDER)


def generation_due(counts: tuple[int, int, int]) -> int | None:
    """The generation to collect for `gc.get_count()` values, or None: none is due."""
    young, middle, old = counts
    if young < YOUNG:
        return None
    if old > OLDER[1]:  # CPython's order (Modules/gcmodule.c, collect_generations): oldest due first
        return 2
    return 1 if middle > OLDER[0] else 0


def between_batches() -> int | None:
    """Collect what `generation_due` says (call where no batch is half-built); returns the
    generation collected, or None."""
    gen = generation_due(gc.get_count())
    if gen is not None:
        gc.collect(gen)
    return gen
