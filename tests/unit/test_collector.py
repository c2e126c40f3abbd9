"""The collector's per-loop cost: totals every loop, per-line diffs on a budget, exact spans."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from leakscope.collector import DIFF_EXACT_LOOPS, Collector, DiffSchedule
from leakscope.settings import Settings

KEPT: list[bytes] = []
KEEP_LINE = 0


def _keep_three() -> None:
    """Keeps three small objects per call, all made on one line."""
    KEPT.extend([bytes(40 + i % 3) for i in range(3)])  # noqa: C416 - one line, three blocks


KEEP_LINE = _keep_three.__code__.co_firstlineno + 2


class Recorder:
    """An observer that keeps what the collector hands over, as plain data."""

    def __init__(self) -> None:
        self.loops: list[dict[str, Any]] = []
        self.changes: list[list[tuple[str, int, int, int]]] = []

    def on_measuring(self, warmup_loops: int) -> None:
        pass

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        pass

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        self.loops.append(loop)
        self.changes.append(changes)

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        pass


@pytest.fixture(autouse=True)
def _clean() -> Any:
    KEPT.clear()
    yield
    KEPT.clear()
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def _drive(iterations: int, schedule: DiffSchedule | None = None) -> Recorder:
    settings = Settings(iterations=iterations, warmup=2, frames=5)
    recorder = Recorder()
    collector = Collector(settings, recorder)
    if schedule is not None:
        collector.diffs = schedule
    collector.begin()
    while True:
        _keep_three()
        if not collector.end_loop():
            break
    collector.finish()
    return recorder


def test_schedule_spreads_a_costly_diff_over_the_loops_it_pays_for() -> None:
    schedule = DiffSchedule(share=0.2, floor=0.0)
    for _ in range(5):
        schedule.observe(0.010)
    # A 20 ms diff against a 2 ms budget: ten loops, if the run is long enough ...
    schedule.diffed(spent=0.020, traced=500)
    assert schedule.gap == 10
    # ... but never more than a tenth of the loops traced so far ...
    schedule.diffed(spent=0.080, traced=DIFF_EXACT_LOOPS + 40)
    assert schedule.gap == (DIFF_EXACT_LOOPS + 40) // 10
    # ... and not at all over the first loops.
    schedule.diffed(spent=0.020, traced=DIFF_EXACT_LOOPS - 1)
    assert schedule.gap == 1
    schedule.diffed(spent=0.0001, traced=500)
    assert schedule.gap == 1


def test_schedule_floor_lets_cheap_diffs_run_every_loop() -> None:
    schedule = DiffSchedule(share=0.2, floor=0.0005)
    schedule.observe(0.00001)  # a loop of 10 µs
    schedule.diffed(spent=0.0004, traced=500)
    assert schedule.gap == 1


def test_every_loop_has_totals_and_diffs_are_exact_over_their_spans() -> None:
    """Diffs skip loops (budget spent), yet every loop has its totals and no change is lost."""
    iterations = DIFF_EXACT_LOOPS + 300
    # No budget at all: every diff is as far apart as the run's length allows.
    recorder = _drive(iterations, DiffSchedule(share=0.0, floor=1e-12))
    measured = [loop for loop in recorder.loops if not loop["warmup"]]
    assert len(measured) == iterations
    assert all(loop["traced_bytes"] is not None for loop in measured)
    assert all(loop["traced_blocks"] is not None for loop in measured)
    # Loops inside a span (before the loop that carries it) have no line changes of their own.
    inside: set[int] = set()
    for loop in measured:
        if "span_from" in loop:
            span = set(range(loop["span_from"], loop["index"]))
            assert span and not span & inside
            inside |= span
    assert inside, "no diff spanned several loops"
    for loop, changes in zip(recorder.loops, recorder.changes, strict=True):
        if loop["index"] in inside:
            assert changes == []
    assert len(measured) - len(inside) < DIFF_EXACT_LOOPS + 30
    # The keeping line's changes, summed over the diffs, are every block it kept.
    kept = sum(
        count for changes in recorder.changes for file, line, _, count in changes
        if file == __file__ and line == KEEP_LINE
    )
    # (plus the list's own storage, one block or two while it is reallocated)
    assert 3 * iterations <= kept <= 3 * iterations + 2
    # The traced blocks of loops between two diffs follow the kept blocks closely.
    blocks = [loop["traced_blocks"] for loop in measured]
    assert blocks[-1] - blocks[0] >= 3 * (iterations - 1)
    steps = [b - a for a, b in zip(blocks, blocks[1:])]
    assert sorted(steps)[len(steps) // 2] in range(2, 6)


def test_a_short_cheap_run_diffs_every_loop() -> None:
    recorder = _drive(15)
    measured = [loop for loop in recorder.loops if not loop["warmup"]]
    assert not any("span_from" in loop for loop in measured)

