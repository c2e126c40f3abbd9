"""Memory mapped outside malloc that warms up, then saws: no leak.

An arena allocator's cache (``leakext.pool``, 32 KiB ``mmap``'d blocks, kept
after a burst and reused) grows by one block a loop for the first 100 loops,
as the bursts it serves grow, then stays bounded: each loop it keeps between
80 and 100 blocks, releasing some and mapping them again. RSS climbs for
100 loops, then saws over a flat floor, while malloc's counters stay flat.
Run long enough to see the warm-up end (the test runs 300 loops).

Expected: leak=no kind=none line=- (with --iterations 300)
"""

from __future__ import annotations

import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file

leakext = build.load()
WARMUP_LOOPS = 100
_loops = itertools.count()


def iteration() -> None:
    n = next(_loops)
    # The cache's size: climbing while the warm-up's bursts grow, then 80-100 blocks.
    leakext.pool(n if n < WARMUP_LOOPS else 80 + (n * 7) % 21)
