"""Fast mode's locate loops start with the dict and list free lists empty (FreeListDrain).

Found when the walks' results moved into forked copies: leakscope's own work between
the 6 locate loops freed a few more dicts onto the interpreter's free list, the
worker's dict-a-loop leak took them untraced, and `check` said "Undecided" on a
worker that tests/cli/test_native.py expects to leak (4 runs of 4).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from leakscope.measure.phases import FreeListDrain


def _traced_bytes_of_a_new(make: Callable[[], object]) -> int:
    """Bytes tracemalloc records for one new object from ``make`` (none when the
    object came from a free list)."""
    def grew(make: Callable[[], object]) -> int:
        before = tracemalloc.get_traced_memory()[0]
        kept = make()
        after = tracemalloc.get_traced_memory()[0]
        del kept
        return after - before

    # The int that holds the first reading is itself traced: read it off.
    return grew(make) - grew(lambda: None)


def test_after_a_drain_a_new_dict_or_list_is_a_traced_allocation() -> None:
    tracemalloc.start(1)
    try:
        # A display, as a worker writes it: dict() and list() allocate afresh.
        for make in (lambda: {}, lambda: []):
            refill = [make() for _ in range(200)]
            del refill  # its free list is full again
            assert _traced_bytes_of_a_new(make) == 0, make  # taken from it, untraced
            drained = FreeListDrain()
            drained.drain()
            assert _traced_bytes_of_a_new(make) > 0, make
            drained.release()
    finally:
        tracemalloc.stop()
