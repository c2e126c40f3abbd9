"""What one watch-rule check costs as a watched worker's run grows (issue 13).

A watched process (``leakscope run --sample auto``) judges its counters now
and then. This times one check on a clean worker's counters (allocated
blocks and malloc's bytes, read every third unit, flat with noise) after
1,000 to 100,000 units: the check leakscope runs (``WatchPhase.counters_grow``
on its bounded ``WatchSeries``) against the same rule on every read kept
(what a check cost before the series was bounded). Ratios within one run.

    .venv/bin/python bench/watch_bench.py
"""

from __future__ import annotations

import random
import time
from typing import Any

from leakscope.analysis.stats import ratchet
from leakscope.measure.phases import WatchPhase
from leakscope.measure.watching import CounterSpacing, WatchSeries

GAP = 3
UNITS = (1_000, 5_000, 20_000, 100_000)
REPEATS = 5


class _Engine:
    measured = 0
    detection: dict[str, Any] = {}


def _best(check: Any) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        check()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    rng = random.Random(1)
    print(f"one watch-rule check on a clean worker's counters (read every {GAP} units)")
    for units in UNITS:
        reads = [(326_000.0 + rng.randrange(5), 13_000_000.0 + rng.randrange(300))
                 for _ in range(units // GAP)]
        half = len(reads) // 2
        later_blocks = [b for b, _ in reads[half:]]
        later_malloc = [m for _, m in reads[half:]]

        def every_read(blocks: list[float] = later_blocks,
                       malloc: list[float] = later_malloc) -> None:
            ratchet(blocks)
            ratchet(malloc)

        watch = WatchPhase.__new__(WatchPhase)
        watch.series, watch.spacing = WatchSeries(), CounterSpacing()
        # The rule reads two fields of the engine.
        watch.engine = _Engine()  # type: ignore[assignment]
        watch.spacing.gap = GAP
        for b, m in reads:
            watch.series.add(int(b), int(m))
        old, new = _best(every_read), _best(watch.counters_grow)
        print(f"  {units:>7,} units: every read {old * 1e3:6.2f} ms ({len(reads):,} points), "
              f"bounded {new * 1e3:5.2f} ms ({len(watch.series)} points), {old / new:5.1f}x")


if __name__ == "__main__":
    main()
