"""How a watched process keeps its counters and judges them, at a cost that stays bounded.

A watched process (``leakscope run --sample auto``, or one ``--sample K`` did
not pick) may run for days. Three things here keep what it pays per unit
from growing with the run:

- ``CounterSpacing``: the counters' reads (neither is O(1)) every few units,
  within a share of a unit's time;
- ``WatchSeries``: the series the rule reads never holds more than
  MAX_WATCH_POINTS points; past that it keeps every other one (its points
  are then twice as far apart, and the rule's rates say per unit);
- ``RuleSchedule``: the rule runs within a share of the units' time too.

Before these, a Celery pool child that never grew ran the rule every 20
units on every point it had read: 20-45 ms a check once it had a thousand
units, 2.0 s of a 4.1 s run (bench/workers_bench.py), and a rule whose cost
grew with the run. Everything here runs in the measured process: standard
library only.
"""

from __future__ import annotations

import math
from array import array

# A watched process reads its counters within this share of a unit's time
# (CounterSpacing), at most every MAX_COUNTER_GAP units, the gap set from the
# cost of the first COUNTER_SPACING_READS reads.
COUNTER_SHARE = 0.02
MAX_COUNTER_GAP = 8
COUNTER_SPACING_READS = 20
# The rule runs once the process has WATCH_MIN_UNITS units, then at most
# every CHECK_EVERY units and within RULE_SHARE of the units' time, but at
# least once in MAX_CHECK_GAP units (a check that found the counters rising
# but settling costs its Theil-Sen slopes, a few ms).
# Growth the rule sees is confirmed over as many units again before a window
# opens (phases.WatchPhase.growth_confirmed).
WATCH_MIN_UNITS = 100
CHECK_EVERY = 20
RULE_SHARE = 0.01
MAX_CHECK_GAP = 400
# The most points the watch rule's series holds (it reads the later half).
MAX_WATCH_POINTS = 512


def smoothed(previous: float | None, value: float) -> float:
    """An exponential average that starts at its first value."""
    return value if previous is None else 0.9 * previous + 0.1 * value


class CounterSpacing:
    """Every how many units a watched process reads its allocated blocks and malloc's bytes.

    Neither read is O(1): ``sys.getallocatedblocks()`` visits every pymalloc
    pool and ``mallinfo2()`` every free chunk, 40-70 µs each in a Celery pool
    child, 5-8% of a 2 ms task, paid for as long as the worker runs. After the
    first COUNTER_SPACING_READS units (every unit, to know their cost) they
    take at most COUNTER_SHARE of a unit's time, averaged: every ``gap``
    units, a gap fixed then, so that the points the rules read are evenly
    spaced (at most MAX_COUNTER_GAP units apart; 1 where the reads are cheap
    against the units). The other units record RSS and time only.
    """

    def __init__(self) -> None:
        self.read_seconds: float | None = None
        self.unit_seconds: float | None = None
        self.reads = 0
        self.gap: int | None = None  # fixed when spacing begins
        self.since = 0

    def observe(self, unit_seconds: float, read_seconds: float | None) -> None:
        self.unit_seconds = smoothed(self.unit_seconds, unit_seconds)
        if read_seconds is not None:
            self.read_seconds = smoothed(self.read_seconds, read_seconds)
            self.reads += 1

    def read_now(self) -> bool:
        """Whether this unit reads the counters."""
        if self.reads < COUNTER_SPACING_READS:
            return True
        if self.gap is None:
            budget = COUNTER_SHARE * (self.unit_seconds or 0.0)
            cost = self.read_seconds or 0.0
            self.gap = max(1, min(MAX_COUNTER_GAP, math.ceil(cost / budget) if budget else 1))
            self.since = 0  # the next read, gap units after the last
        self.since += 1
        if self.since >= self.gap:
            self.since = 0
            return True
        return False


class WatchSeries:
    """The counters' reads the watch rule judges: ``stride`` reads apart, at most
    MAX_WATCH_POINTS of them.

    The rule reads the later half of the series; a series that grew with the
    run made each check cost in proportion to the units watched so far. When
    full, every other point goes (the latest stays) and ``stride`` doubles: a
    day-long run's points span it evenly, a few hundred units apart. Arrays,
    not lists: they grow by realloc, outside the block count they hold.
    """

    def __init__(self) -> None:
        self.blocks = array("d")
        self.malloc = array("d")
        self.stride = 1
        self._skip = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def add(self, blocks: int, malloc: int | None) -> None:
        """One read of the counters (malloc None: this libc has no counter)."""
        if self._skip:
            self._skip -= 1
            return
        self._skip = self.stride - 1
        self.blocks.append(blocks)
        if malloc is not None:
            self.malloc.append(malloc)
        if len(self.blocks) >= MAX_WATCH_POINTS:
            self.keep_every(2)
            self.stride *= 2
            self._skip = self.stride - 1

    def keep_every(self, factor: int) -> None:
        """Keep every ``factor``-th point, ending with the latest (the reads' grid
        widened, or the series full)."""
        self.blocks = self.blocks[(len(self.blocks) - 1) % factor::factor]
        self.malloc = self.malloc[(len(self.malloc) - 1) % factor::factor]


class RuleSchedule:
    """When a watched process runs the rule: at WATCH_MIN_UNITS units, then every
    ``gap`` units, the gap set from the last checks' cost so that they take at most
    RULE_SHARE of the units' time (between CHECK_EVERY and MAX_CHECK_GAP)."""

    def __init__(self) -> None:
        self.next_at = WATCH_MIN_UNITS
        self.gap = CHECK_EVERY
        self.check_seconds: float | None = None

    def due(self, measured: int) -> bool:
        return measured >= self.next_at

    def checked(self, measured: int, seconds: float, unit_seconds: float | None) -> None:
        """A check ran at ``measured`` units and took ``seconds``; units take
        ``unit_seconds`` (smoothed)."""
        self.check_seconds = smoothed(self.check_seconds, seconds)
        budget = RULE_SHARE * (unit_seconds or 0.0)
        wanted = math.ceil(self.check_seconds / budget) if budget > 0 else MAX_CHECK_GAP
        self.gap = max(CHECK_EVERY, min(MAX_CHECK_GAP, wanted))
        self.next_at = measured + self.gap

    def due_by(self, measured: int) -> None:
        """Run the next check at ``measured`` units at the latest."""
        self.next_at = min(self.next_at, measured)
