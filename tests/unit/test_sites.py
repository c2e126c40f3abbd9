"""Summing tracemalloc's raw traces by line: the per-loop pass and the run's end pass agree."""

from __future__ import annotations

import os
import random

from leakscope.model import sites

USER = os.path.abspath("scenarios/worker.py")
LIBRARY = os.path.join(os.path.dirname(os.__file__), "json", "decoder.py")
OWN = os.path.abspath(os.path.join(os.path.dirname(sites.__file__), "wire.py"))


def _traces(count: int, seed: int) -> list[tuple]:
    """Raw traces as ``_tracemalloc._get_traces`` gives them: one tuple per stack, shared."""
    rng = random.Random(seed)
    stacks = [
        ((USER, 10), (USER, 3)),
        ((USER, 11),),
        ((LIBRARY, 40), (USER, 12)),  # a library line the user called: the user's
        ((LIBRARY, 41), (OWN, 7)),  # a library line leakscope called: its own
        ((OWN, 8), (USER, 13)),
        ((LIBRARY, 40), (USER, 14)),  # the same innermost line, another stack
        (),
    ]
    traces = []
    for _ in range(count):
        frames = rng.choice(stacks)
        size = rng.choice([16, 32, 64, 600, 100_000])
        traces.append((rng.choice([0, 0, 0, 5]), size, frames, len(frames)))
    return traces


def test_the_end_pass_sums_as_the_per_loop_pass() -> None:
    for seed in range(20):
        traces = _traces(500, seed)
        alone = sites.aggregate(traces, sites.OwnFilter())
        together, tracebacks = sites.aggregate_with_tracebacks(traces, sites.OwnFilter(), 3)
        assert together.by_line == alone.by_line
        for name in ("total_bytes", "total_blocks", "malloc_bytes", "all_blocks",
                     "other_bytes"):
            assert getattr(together, name) == getattr(alone, name), name
        assert len(tracebacks) == min(3, len(alone.by_line))


def test_the_dominant_traceback_is_the_stack_that_kept_most_at_the_line() -> None:
    big, small = ((LIBRARY, 40), (USER, 12)), ((LIBRARY, 40), (USER, 14))
    traces = [(0, 100, small, 2), (0, 300, big, 2), (0, 100, small, 2), (0, 50, ((USER, 11),), 1)]
    totals, tracebacks = sites.aggregate_with_tracebacks(traces, sites.OwnFilter(), 1)
    assert totals.by_line[(LIBRARY, 40)] == [500, 3]
    assert tracebacks == {(LIBRARY, 40): [(LIBRARY, 40), (USER, 12)]}
