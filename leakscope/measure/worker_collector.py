"""The Collector configured for a real worker's process: open-ended units, holders on a schedule.

``leakscope trace`` knows how many loops it will run, so it places its
holder checkpoints at fractions of them and describes the growers after the
last loop. A Celery pool child or a gunicorn worker runs until someone stops
it, so here the checkpoints come early and dense, then every
``checkpoint_every`` traced units; the growers are described (and the line
that grows them located in the next unit) as soon as three checkpoints show
them rising; and ``close()`` ends the run whenever the process ends.

A process can also be *watched*: its units are measured with the cheap
counters of fast mode (allocated blocks, malloc's in-use bytes, RSS) and the
decision rule runs on them now and then (leakscope.measure.watching: reads,
series and checks at a cost bounded per unit); once they grow faster
than the smallest leak worth tracing (or at once, for a process that
``--sample K`` picked), tracemalloc starts and the units are traced as in
full mode ("locate" loops) for a window of ``trace_units`` units: enough to
name the lines and the containers. Then tracemalloc stops and the counters
carry on to the end, so a worker that runs for days pays tracemalloc's
price once. It is never started again: on CPython 3.11 every start/stop
cycle leaks malloc memory (150 B to tens of KiB, by the number of files
traced), which a long-running worker must not pay, and which the counters
would then report as growth.

The phases themselves (WatchPhase, UnitTracedPhase) are in leakscope.measure.phases;
this module picks their sequence and adds what only a process that ends on
its own needs: ``close()`` and ``abandon()``.
"""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

# Imported here, not at the first check: an import in the middle of a
# watched run would be a step in the very block count it reads
# (phases.WatchPhase.counters_grow reads the rule from it).
from leakscope.analysis import policy, rules, stats  # noqa: F401
from leakscope.measure.collector import Collector, DiffSchedule, HolderProbe, UnitObserver
from leakscope.measure.phases import (
    WINDOW_COPY_WAIT,
    CheckpointSchedule,
    Phase,
    UnitTracedPhase,
    WatchPhase,
)
from leakscope.model.settings import Settings

__all__ = ["CheckpointSchedule", "UnitCollector"]

# Aggregating the traces by line costs in proportion to the traces alive,
# and a long-running worker holds many: do it at most this share of a unit's
# time (the traced total, read in O(1), still makes one point per unit) ...
AGGREGATE_BUDGET = 0.2
# ... but at least once in this many units.
MAX_AGGREGATE_GAP = 50
# ... and at least one per tenth of the units traced so far.
WORKER_MIN_STEPS = 10


class UnitCollector(Collector):
    """One process of a real worker, fed one ``end_loop()`` per unit of work.

    ``may_trace`` False: a process that ``--sample K`` did not pick, watched
    and never traced; ``trace_first``: one it picked, traced as soon as its
    warm-up is over. ``settings.sample == 1`` traces every unit to the exit.
    """

    observer: UnitObserver

    def __init__(
        self, settings: Settings, observer: UnitObserver, holder_probe: HolderProbe | None = None,
        may_trace: bool = True, trace_first: bool = False,
    ) -> None:
        # The parent stops the command; the collector itself never ends a run.
        self.watching = settings.sample != 1
        # The mode the run reports: watched units are measured as fast mode's.
        settings.mode = "fast" if self.watching else "full"
        self.watch: WatchPhase | None = None
        self.traced_phase: UnitTracedPhase | None = None
        self._may_trace = may_trace
        self._trace_first = trace_first and may_trace
        super().__init__(settings, observer, holder_probe, plan=self._plan)
        # Per-line diffs within AGGREGATE_BUDGET of the unit time, at least
        # every MAX_AGGREGATE_GAP units.
        self.diffs = DiffSchedule(share=AGGREGATE_BUDGET, floor=0.0, max_gap=MAX_AGGREGATE_GAP,
                                  exact_loops=0, min_steps=WORKER_MIN_STEPS)
        self.other_threads_allocate = True
        self.closed = False
        # A memray window is this process's own: a forked child inherits none.
        self._pid = os.getpid()

    def _plan(self, engine: Collector) -> Phase:
        """After warm-up: traced for good, or watched with a window to trace when it grows."""
        settings = self.settings
        if not self.watching:
            self.traced_phase = UnitTracedPhase(engine, self.observer, settings.checkpoint_every)
            return self.traced_phase
        watch = self.watch = WatchPhase(engine)
        window = self.traced_phase = UnitTracedPhase(
            engine, self.observer, settings.checkpoint_every, watch, settings.trace_units,
            picked=self._trace_first)
        if self._may_trace:
            watch.window = window
        return window if self._trace_first else watch

    def close(self) -> dict[str, Any]:
        """End the run now (the process is exiting): final holders, then ``finish()``."""
        if self.closed:
            return {}
        self.closed = True
        # The window's copy writes its findings before this process's final word.
        if self.watch is not None:
            self.watch.reap_copy(wait=WINDOW_COPY_WAIT)
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        if (
            self.measuring and self.traced > 0 and tracemalloc.is_tracing()
            and self.traced_phase is not None
        ):
            self.traced_phase.end()
        return self.finish()

    def abandon(self) -> None:
        """A forked child drops the parent's collector: no callbacks, no tracer.

        The process itself giving up (the run is over, an error) stops its
        memray window and removes the capture nobody will read; a forked child
        has no Tracker of its own (memray does not follow forks here).
        """
        self.closed = True
        window, self.memray = self.memray, None
        if window is not None and os.getpid() == self._pid:
            window.discard()
        self.gc_counter.__exit__()
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
            # A walk still in its copy: a forked child's is not its to read or
            # reap (the pipe is shared with the parent); the process itself
            # giving up reaps it.
            self.holder_probe.drop_pending(reap=os.getpid() == self._pid)
            self.holder_probe.drop_describe(reap=os.getpid() == self._pid)
