"""A batch list that collects events and is flushed (cleared) every 5 loops.

A sawtooth: up for four loops, back to the floor on the fifth. Not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools

BATCH: list = []
FLUSH_EVERY = 5
_ids = itertools.count()
flushed = 0


def flush() -> None:
    global flushed
    flushed += len(BATCH)
    BATCH.clear()


def iteration() -> None:
    n = next(_ids)
    BATCH.append({"event": n, "payload": "x" * 100})
    if len(BATCH) >= FLUSH_EVERY:
        flush()
