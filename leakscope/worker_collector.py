"""The Collector for a real worker's process: open-ended units, holders on a schedule.

``leakscope trace`` knows how many loops it will run, so it places its
holder checkpoints at fractions of them and describes the growers after the
last loop. A Celery pool child or a gunicorn worker runs until someone stops
it, so here the checkpoints come early and dense, then every
``checkpoint_every`` traced units; the growers are described (and the line
that grows them located in the next unit) as soon as three checkpoints show
them rising; and ``close()`` ends the run whenever the process ends.

A process can also be *watched*: its units are measured with the cheap
counters of fast mode (allocated blocks, malloc's in-use bytes, RSS) and the
decision rule runs on them every CHECK_EVERY units; once they grow faster
than the smallest leak worth tracing (or at once, for a process that
``--sample K`` picked), tracemalloc starts and the units are traced as in
full mode ("locate" loops) for a window of ``trace_units`` units: enough to
name the lines and the containers. Then tracemalloc stops and the counters
carry on to the end, so a worker that runs for days pays tracemalloc's
price once. It is never started again: on CPython 3.11 every start/stop
cycle leaks malloc memory (150 B to tens of KiB, by the number of files
traced), which a long-running worker must not pay, and which the counters
would then report as growth.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from array import array
from typing import Any, Protocol

# Imported here, not at the first check: an import in the middle of a
# watched run would be a step in the very block count it reads.
from leakscope import counters, sites
from leakscope.analysis.policy import SETTLING_RATIO
from leakscope.analysis.rules import NATIVE_MIN_RATE, TRACE_MIN_BLOCKS_RATE
from leakscope.analysis.stats import ratchet, suffix_minima, theil_sen
from leakscope.collector import (
    Collector,
    DiffSchedule,
    HolderProbe,
    Observer,
    get_traces,
)
from leakscope.settings import Settings

# Holder walks at these traced-unit counts, then every `checkpoint_every`;
# in a traced window, none but the first three in its last WINDOW_END_MARGIN
# units (a window needs MIN_TRACE_UNITS: three walks and one located unit).
EARLY_CHECKPOINTS = (0, 10, 30, 60)
WINDOW_END_MARGIN = 10
# The first walks always run (three show a container growing); later ones
# are skipped while walking has taken more than this share of the time.
EARLY_WALKS = 3
WALK_BUDGET = 0.1
# A watched process (--sample auto, or one not picked by --sample K) runs
# the decision rule on the later half of its counters every CHECK_EVERY units
# once it has WATCH_MIN_UNITS, and starts tracing when they grow at least
# TRACE_MIN_BLOCKS_RATE blocks or NATIVE_MIN_RATE bytes of malloc per unit
# (analysis/rules.py). Slower growth is left to `--sample 1`, which traces every
# unit from the start.
WATCH_MIN_UNITS = 100
CHECK_EVERY = 20
# Aggregating the traces by line costs in proportion to the traces alive,
# and a long-running worker holds many: do it at most this share of a unit's
# time (the traced total, read in O(1), still makes one point per unit) ...
AGGREGATE_BUDGET = 0.2
# ... but at least once in this many units.
MAX_AGGREGATE_GAP = 50
# Seconds an exiting process waits for the copy still describing its window.
WINDOW_COPY_WAIT = 15.0


class CheckpointSchedule:
    """Traced-unit counts at which to walk the heap: dense early, then regular.

    Within a traced window of ``window`` units the walks stop short of its
    end: the copy that closes the window walks once more (worker_collector's
    _close_window), so a walk here at the same moment would be spent twice.
    """

    def __init__(self, every: int, window: int = 0) -> None:
        self.every = max(1, every)
        self.window = window

    def __contains__(self, traced: object) -> bool:
        if not isinstance(traced, int):
            return False
        if (
            self.window and traced >= self.window - WINDOW_END_MARGIN
            and traced not in EARLY_CHECKPOINTS[:EARLY_WALKS]
        ):
            return False
        return traced in EARLY_CHECKPOINTS or (traced > 0 and traced % self.every == 0)


class UnitObserver(Observer, Protocol):
    """What a worker process reports beyond a script's loops (``agent.WorkerObserver``)."""

    def on_lines(self, changes: list[tuple[str, int, int, int]]) -> None: ...
    def on_holders(self, report: dict[str, Any]) -> None: ...
    def on_window(self, described: dict[str, Any]) -> None: ...


class UnitCollector(Collector):
    """One process of a real worker, fed one ``end_loop()`` per unit of work."""

    observer: UnitObserver

    def __init__(
        self, settings: Settings, observer: UnitObserver, holder_probe: HolderProbe | None = None,
        may_trace: bool = True, trace_first: bool = False,
    ) -> None:
        # The parent stops the command; the collector itself never ends a run.
        # A watched process starts in fast mode (no tracing until it grows);
        # fast mode's preallocated per-loop arrays are for a known count, so a
        # watched worker keeps growable arrays instead.
        self.watching = settings.sample != 1
        settings.mode = "fast" if self.watching else "full"
        settings.iterations = 0 if self.watching else 1 << 40
        super().__init__(settings, observer, holder_probe)
        settings.iterations = 1 << 40
        self._checkpoints: Any = CheckpointSchedule(
            settings.checkpoint_every, settings.trace_units if self.watching else 0)
        self._locator_running = False
        self._described = False
        # Per-line diffs within AGGREGATE_BUDGET of the unit time, at least
        # every MAX_AGGREGATE_GAP units.
        self.diffs = DiffSchedule(share=AGGREGATE_BUDGET, floor=0.0, max_gap=MAX_AGGREGATE_GAP,
                                  exact_loops=0)
        self.other_threads_allocate = True
        self._measuring_since: float | None = None
        self.closed = False
        # Watched: the counters of every unit, for the decision rule.
        self._watch_blocks = array("d")
        self._watch_malloc = array("d")
        # --sample K: a process not picked is watched and never traced; one
        # picked traces its window as soon as its warm-up is over.
        self.may_trace = may_trace
        self.trace_first = trace_first and may_trace
        self.window_closed = False
        # The forked copy describing the window, until it has exited.
        self.window_copy: int | None = None

    # -------------------------------------------------------------- driving

    def end_loop(self) -> bool:
        if self.window_copy is not None:
            self._reap_window_copy()
        if self.watching and self.measuring and self._traced_target == 0:
            return self._end_watched_unit()
        super().end_loop()
        if self.trace_first and self.measuring and self._traced_target == 0:
            self.trace_first = False
            self.detection = {"picked": True, "after_units": 0}
            self._start_tracing_for_good()
        return True

    def close(self) -> dict[str, Any]:
        """End the run now (the process is exiting): final holders, then ``finish()``."""
        if self.closed:
            return {}
        self.closed = True
        # The window's copy writes its findings before this process's final word.
        self._reap_window_copy(wait=WINDOW_COPY_WAIT)
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        if self.measuring and self.traced > 0 and tracemalloc.is_tracing():
            if self.diffs.skipped:
                self._flush_lines()
            self._observe_end()
            if self.holder_probe is not None:
                self._checkpoint(final=True)
                self._backref_fallback()
        return self.finish()

    def abandon(self) -> None:
        """A forked child drops the parent's collector: no callbacks, no tracer."""
        self.closed = True
        self._gc_counter.__exit__()
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()

    # ------------------------------------------------------------- watching

    def _end_watched_unit(self) -> bool:
        """Counters only; every CHECK_EVERY units, the rule decides whether to trace."""
        import time

        started = time.perf_counter()
        seconds = started - self._last_time
        index = self.index
        self.index += 1
        self._record_detect_unit(index, seconds)
        if (
            self.may_trace and self.measured >= WATCH_MIN_UNITS
            and self.measured % CHECK_EVERY == 0 and self._counters_grow()
        ):
            self._start_tracing_for_good()
        self._last_time = time.perf_counter()
        self.harness_seconds += self._last_time - started
        return True

    def _counters_grow(self) -> bool:
        # The later half only: a framework's own warm-up (connections,
        # first-task imports, caches that fill) is steep early and then dies
        # away, while a leak keeps its pace.
        series = list(self._watch_blocks)
        half = len(series) // 2
        blocks = ratchet(series[half:])
        grew = blocks.leak and blocks.slope >= TRACE_MIN_BLOCKS_RATE and not _settling(series)
        malloc = None
        if counters.has_malloc_counter() and len(self._watch_malloc) == len(self._watch_blocks):
            malloc_series = list(self._watch_malloc)
            malloc = ratchet(malloc_series[half:])
            grew = grew or (malloc.leak and malloc.slope >= NATIVE_MIN_RATE
                            and not _settling(malloc_series))
        self.detection = {
            "blocks_p_value": blocks.p_value, "blocks_rate": round(blocks.slope, 3),
            "malloc_p_value": malloc.p_value if malloc else None,
            "malloc_rate": round(malloc.slope, 1) if malloc else None,
            "growth": grew, "after_units": self.measured,
        }
        return grew

    def _start_tracing_for_good(self) -> None:
        """Trace every unit from now on, as full mode does, for the window if there is one."""
        self.may_trace = False  # one window per process: tracemalloc never restarts
        self._traced_target = 1 << 40
        self.observer.on_phase("locate", self.detection)
        self._start_tracing()

    def _window_full(self) -> bool:
        return bool(
            self.watching and self.settings.trace_units and not self.window_closed
            and self.traced >= self.settings.trace_units and not self._locator_running
        )

    def _close_window(self) -> None:
        """The window's traced units are enough: describe them, stop tracing, watch again.

        What close() does at exit is done for the window: the last lines, the
        dominant tracebacks, the one full collection that tells cyclic
        garbage from reachable growth, the final holder walk and the
        back-reference search. All but the lines run in a forked copy of the
        process, frozen at this moment with tracemalloc's record of it, while
        the worker goes on at once; the copy writes its findings to the
        process's events file (a "window" message) and exits, so the worker
        is neither kept waiting for seconds nor collected mid-run. Without
        fork the same runs here, except under gc.disable(): a collection here
        would free the very garbage the worker piles up, so such a process
        keeps tracing to its exit instead.
        """
        from leakscope.holders import fork_copy

        self.window_closed = True
        if self.diffs.skipped:
            self._flush_lines()
        copy = fork_copy()
        if copy == 0:
            code = 1
            try:
                self._describe_window()
                code = 0
            finally:
                os._exit(code)
        if copy is None:
            if not gc.isenabled():
                return
            self._describe_window()
        self.window_copy = copy
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        if not self._tracemalloc_was_on:
            tracemalloc.stop()
        self._traced_target = 0
        self.observer.on_phase("detect", {"after_traced_units": self.traced})

    def _describe_window(self) -> None:
        """Tracebacks, the full collection, the last holder walk: sent as one "window" message."""
        self._observe_end()
        if self.holder_probe is not None:
            self._checkpoint(final=True)
            self._backref_fallback()
        self.observer.on_window({
            "end": self._end or {},
            "holders": self.holder_probe.report() if self.holder_probe is not None else None,
        })

    def _reap_window_copy(self, wait: float = 0.0) -> None:
        """Collect the copy's exit status (no zombie); at exit, give it ``wait`` seconds."""
        import time

        pid = self.window_copy
        if pid is None:
            return
        deadline = time.monotonic() + wait
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # someone else reaped it (a framework's SIGCHLD handler)
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if done:
            self.window_copy = None
        elif wait:
            try:
                os.kill(pid, 9)  # stuck (a lock held by another thread at fork)
                os.waitpid(pid, 0)
            except OSError:
                pass
            self.window_copy = None

    def _flush_lines(self) -> None:
        """The last units were cheap ones: their lines arrive now, so each line's
        series ends where the tracing ends."""
        totals = sites.aggregate(get_traces(), self._is_own)
        self.observer.on_lines(sites.diff(self._previous, totals))
        self._previous = totals
        self._last_traced = None
        self.diffs.skipped = 0

    # ------------------------------------------------------------ internals

    def _diff_due(self) -> bool:
        # The unit the locator ran in: its line changes name the grower's line.
        return self._locator_running or super()._diff_due()

    def _record_measured(self, index: int, seconds: float) -> None:
        stop_locator = self._locator_running
        super()._record_measured(index, seconds)
        if stop_locator and self.holder_probe is not None:
            self.holder_probe.stop_locating()
            self._locator_running = False
            # Saved at once: a process killed before its final word (a stop
            # that outlasts --stop-timeout) still names the line.
            self.observer.on_holders(self.holder_probe.snapshot())
        if self._window_full():
            self._close_window()

    def _checkpoint(self, final: bool = False) -> None:
        import time

        probe = self.holder_probe
        assert probe is not None
        now = time.perf_counter()
        if self._measuring_since is None:
            self._measuring_since = now
        if (
            not final and probe.checkpoints >= EARLY_WALKS
            and probe.walk_seconds > WALK_BUDGET * (now - self._measuring_since)
        ):
            return  # walks already took their share of this worker's time
        super()._checkpoint(final)
        if (
            not final and not self._described and probe.checkpoints >= 3
            and probe.describe_now()
        ):
            # Growth at three checkpoints: say what grows, and find the line
            # that grows it during the next unit.
            self._described = True
            # From this frame up: a loop already running in the user's code
            # (a tick script's, a consumer's) gets line events too.
            self._locator_running = probe.start_locating(sys._getframe())
        self.observer.on_holders(probe.snapshot())

    def _record_detect_unit(self, index: int, seconds: float) -> None:
        """A fast-mode detect loop, with no preallocated array to fill."""
        blocks = sys.getallocatedblocks()
        malloc = counters.malloc_in_use()
        # array appends grow by realloc, outside the block count being read.
        self._watch_blocks.append(blocks)
        if malloc is not None:
            self._watch_malloc.append(malloc)
        loop = {
            "index": index, "warmup": False, "phase": "detect",
            "rss_bytes": counters.rss_bytes(), "malloc_bytes": malloc,
            "allocated_blocks": blocks,
            "gc_collections": self._gc_counter.collections, "seconds": seconds,
        }
        self.measured += 1
        self.observer.on_loop(loop, [])


def _settling(series: list[float]) -> bool:
    """Whether the later half grows much slower than the earlier: a warm-up dying away."""
    half = len(series) // 2
    floor = suffix_minima(series)
    early, late = theil_sen(floor[:half]), theil_sen(floor[half:])
    return early > 0 and late < SETTLING_RATIO * early
