"""The Collector for a real worker's process: open-ended units, holders on a schedule.

``leakscope trace`` knows how many loops it will run, so it places its
holder checkpoints at fractions of them and describes the growers after the
last loop. A Celery pool child or a gunicorn worker runs until someone stops
it, so here the checkpoints come early and dense, then every
``checkpoint_every`` traced units; the growers are described (and the line
that grows them located in the next unit) as soon as three checkpoints show
them rising; and ``close()`` ends the run whenever the process ends.

With ``sample`` K > 1 the process is traced one window in K units: each
window is two units with tracemalloc on, and only the second one's per-line
diff counts (the first sets the baseline, so what one unit keeps is measured
exactly as in full mode). Between windows tracemalloc is off and the cheap
counters of fast mode watch every unit; the per-line diffs of successive
windows join into one series, as fast mode's locate loops do.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

from leakscope import sites
from leakscope.collector import (
    TRACEBACK_LINES,
    Collector,
    HolderProbe,
    Observer,
    _get_traces,
)
from leakscope.settings import Settings

# Holder walks at these traced-unit counts, then every `checkpoint_every`.
EARLY_CHECKPOINTS = (0, 10, 30, 60)
# The first walks always run (three show a container growing); later ones
# are skipped while walking has taken more than this share of the time.
EARLY_WALKS = 3
WALK_BUDGET = 0.1
# With --sample, the traced window: units to settle, one whose end is the
# baseline, one measured.
# Three units: with two, the interpreter's free lists (filled by the first
# traced unit) made every window look like a unit kept a few KiB.
WINDOW_UNITS = 3
# --sample auto: trial units traced after warm-up to price tracing; above
# this slowdown of a unit's wall time the process measures in sampled windows,
# with K chosen so the windows cost at most AUTO_WINDOW_BUDGET of its time.
AUTO_TRIAL_UNITS = 5
AUTO_MAX_SLOWDOWN = 1.8
AUTO_WINDOW_BUDGET = 0.5
AUTO_MAX_SAMPLE = 200
# Aggregating the traces by line costs in proportion to the traces alive,
# and a long-running worker holds many: do it at most this share of a unit's
# time (the traced total, read in O(1), still makes one point per unit) ...
AGGREGATE_BUDGET = 0.2
# ... but at least once in this many units.
MAX_AGGREGATE_GAP = 50


class CheckpointSchedule:
    """Traced-unit counts at which to walk the heap: dense early, then regular."""

    def __init__(self, every: int) -> None:
        self.every = max(1, every)

    def __contains__(self, traced: object) -> bool:
        if not isinstance(traced, int):
            return False
        return traced in EARLY_CHECKPOINTS or (traced > 0 and traced % self.every == 0)


class UnitSchedule:
    """Sampled runs: holder walks by units done, at the first window due after each mark.

    Windows are K units apart, so counting them would put the third walk
    (the one that shows a container growing) thousands of units in.
    """

    def __init__(self, collector: Collector, every: int) -> None:
        self.collector = collector
        self.every = CheckpointSchedule(every)
        self.next_mark = 0

    def __contains__(self, traced: object) -> bool:
        done = self.collector.measured
        if done < self.next_mark:
            return False
        self.next_mark = next(n for n in range(done + 1, done + 10 * self.every.every + 2)
                              if n in self.every)
        return True


class UnitCollector(Collector):
    """One process of a real worker, fed one ``end_loop()`` per unit of work."""

    def __init__(
        self, settings: Settings, observer: Observer, holder_probe: HolderProbe | None = None
    ) -> None:
        # The parent stops the command; the collector itself never ends a run.
        settings.iterations = 1 << 40
        # 0 is "auto": trace every unit unless tracing would slow units too much.
        self.auto = settings.sample <= 0
        self.sample = max(1, settings.sample)
        if self.sample > 1:
            settings.mode = "fast"
            # Fast mode's preallocated per-loop arrays are for a known count;
            # a sampled worker records every unit as it comes instead.
            settings.iterations = 0
        super().__init__(settings, observer, holder_probe)
        settings.iterations = 1 << 40
        self._checkpoints: Any = CheckpointSchedule(settings.checkpoint_every)
        if self.sample > 1:
            self.observer = _JoinedWindows(observer)
            self._checkpoints = UnitSchedule(self, settings.checkpoint_every)
        self._locator_running = False
        self._described = False
        # Full mode: aggregate the traces by line every `_gap` units, where the
        # gap keeps the aggregation under AGGREGATE_BUDGET of the unit time.
        self._gap = 1
        self._skipped = 0
        self._own_bytes = 0
        self._unit_seconds: float | None = None
        self._last_traced: int | None = None
        self._measuring_since: float | None = None
        self.closed = False
        # --sample: units since the last window, and where the window is.
        self._untraced_run = 0
        self._window_left = 0
        self._window_tracebacks: dict[tuple[str, int], Any] = {}
        # --sample auto: untraced and traced seconds of the trial units.
        self._trial_untraced: list[float] = []
        self._trial_traced: list[float] = []
        self.decision: dict[str, Any] = {}
        self._last_seconds: float | None = None

    # -------------------------------------------------------------- driving

    def end_loop(self) -> bool:
        if self.sample > 1 and self.measuring:
            return self._end_sampled_unit()
        super().end_loop()
        return True

    def close(self) -> dict[str, Any]:
        """End the run now (the process is exiting): final holders, then ``finish()``."""
        if self.closed:
            return {}
        self.closed = True
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        if self.sample > 1:
            # Sampled: a window cut short proves nothing, and a final
            # collection would see one window's traces, not the run's; the
            # sites take the tracebacks the windows kept.
            if self._window_left and tracemalloc.is_tracing():
                tracemalloc.stop()
            self._end = {"tracebacks": [
                [list(key), [list(frame) for frame in frames]]
                for key, frames in self._window_tracebacks.items()
            ]}
            if self.holder_probe is not None and self.traced > 0:
                self._checkpoint(final=True)
        elif self.measuring and self.traced > 0 and tracemalloc.is_tracing():
            if self._skipped:
                # The last units were cheap ones: their lines arrive now, so
                # each line's series ends where the run ends.
                totals = sites.aggregate(_get_traces(), self._is_own)
                self.observer.on_lines(sites.diff(self._previous, totals))  # type: ignore[attr-defined]
                self._previous = totals
                self._skipped = 0
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

    # ------------------------------------------------------------ --sample auto

    def _warmup_finished(self) -> bool:
        """After warm-up, --sample auto traces a few trial units to price tracing.

        tracemalloc's cost is per allocation: a unit that is mostly I/O (a
        task waiting on its broker, a request on its client) barely notices
        it, an allocation-heavy one can run ten times slower. The trial runs
        as warm-up; if tracing more than AUTO_MAX_SLOWDOWN times the unit's
        wall time, the process measures in sampled windows with the K that
        keeps them under AUTO_WINDOW_BUDGET of its time.
        """
        done = super()._warmup_finished()
        if not self.auto or not done:
            if self.auto and self._last_seconds is not None:
                self._trial_untraced.append(self._last_seconds)
            return done
        if not self._trial_traced and not tracemalloc.is_tracing():
            tracemalloc.start(self.settings.frames)
            self._trial_traced.append(-1.0)  # the unit now ending ran untraced
            return False
        self._trial_traced.append(self._last_seconds or 0.0)
        if len(self._trial_traced) <= AUTO_TRIAL_UNITS:
            return False
        self._decide_sampling()
        return True

    def _decide_sampling(self) -> None:
        untraced = _median(self._trial_untraced[-AUTO_TRIAL_UNITS:])
        traced = _median(self._trial_traced[1:])
        slowdown = traced / untraced if untraced > 0 else 1.0
        self.auto = False
        self.decision = {"untraced_seconds": round(untraced, 6),
                         "traced_seconds": round(traced, 6), "slowdown": round(slowdown, 2)}
        if slowdown <= AUTO_MAX_SLOWDOWN:
            self.decision["sample"] = 1
            self.observer.on_phase("sampling", self.decision)
            return
        # Tracing stops here; sampled windows start it again.
        tracemalloc.stop()
        self.sample = min(AUTO_MAX_SAMPLE, math.ceil(
            WINDOW_UNITS * (slowdown - 1) / AUTO_WINDOW_BUDGET))
        self.decision["sample"] = self.sample
        self.observer.on_phase("sampling", self.decision)
        self.settings.mode = "fast"
        self.fast = True
        self._traced_target = 0
        self.observer = _JoinedWindows(self.observer)
        self._checkpoints = UnitSchedule(self, self.settings.checkpoint_every)

    def _record_warmup(self, index: int, seconds: float) -> None:
        self._last_seconds = seconds
        super()._record_warmup(index, seconds)

    # ------------------------------------------------------------ internals

    def _record_measured(self, index: int, seconds: float) -> None:
        stop_locator = self._locator_running
        self._unit_seconds = seconds if self._unit_seconds is None else (
            0.9 * self._unit_seconds + 0.1 * seconds)
        due = (
            self.sample > 1 or self._skipped >= self._gap - 1 or stop_locator
            # the checkpoint's own unit, and the one after (leakscope's bytes moved)
            or (self.traced + 1) in self._checkpoints or self.traced in self._checkpoints
        )
        if due:
            self._aggregated_unit(index, seconds)
        else:
            self._cheap_unit(index, seconds)
        if stop_locator and self.holder_probe is not None:
            self.holder_probe.stop_locating()
            self._locator_running = False

    def _aggregated_unit(self, index: int, seconds: float) -> None:
        """The per-line diff of full mode, and how often it can be afforded."""
        import time

        started = time.perf_counter()
        super()._record_measured(index, seconds)
        spent = time.perf_counter() - started
        # What leakscope itself holds in the traced heap (its own lines are
        # left out of the aggregate), read after the new line totals replaced
        # the old ones and the diff's temporaries are gone: cheap units
        # subtract it from the raw total.
        self._own_bytes = tracemalloc.get_traced_memory()[0] - self._previous.total_bytes
        self._last_traced = None
        self._skipped = 0
        if self.sample == 1 and self._unit_seconds:
            affordable = math.ceil(spent / (AGGREGATE_BUDGET * self._unit_seconds))
            # At least ten diffs over the run so far: a line's series must be
            # a staircase with many steps for its slope to be its rate.
            self._gap = max(1, min(MAX_AGGREGATE_GAP, affordable, self.traced // 10))

    def _cheap_unit(self, index: int, seconds: float) -> None:
        """A unit between per-line diffs: the traced total in O(1), counters, no lines.

        The verdict's series stays one point per unit; the per-line changes
        of the units in between arrive summed in the next aggregated unit.
        """
        import sys

        from leakscope import counters

        traced = tracemalloc.get_traced_memory()[0] - self._own_bytes
        previous = self._last_traced if self._last_traced is not None else (
            self._previous.total_bytes)
        malloc = counters.malloc_in_use()
        native = None
        if malloc is not None:
            native = int(
                malloc - self._previous.malloc_bytes - tracemalloc.get_tracemalloc_memory()
                - self._trace_overhead * self._previous.all_blocks
            )
        loop = {
            "index": index, "warmup": False, "phase": "measure",
            "traced_bytes": traced, "traced_blocks": self._previous.total_blocks,
            "net_bytes": traced - previous, "rss_bytes": counters.rss_bytes(),
            "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory(),
            "native_bytes": native, "allocated_blocks": sys.getallocatedblocks(),
            "gc_collections": self._gc_counter.collections, "seconds": seconds,
        }
        self._last_traced = traced
        self.measured += 1
        self.traced += 1
        self._skipped += 1
        self.observer.on_loop(loop, [])

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
            self._locator_running = probe.start_locating(None)
        self.observer.on_holders(probe.snapshot())  # type: ignore[attr-defined]

    def _end_sampled_unit(self) -> bool:
        """--sample K: count every unit untraced; trace a short window every K."""
        import time

        started = time.perf_counter()
        seconds = started - self._last_time
        index = self.index
        self.index += 1
        if self._window_left > 2:
            # The window's first units run traced and unmeasured: objects the
            # interpreter recycles (free lists, str and int caches) settle
            # into traces before the baseline is taken.
            self._record_detect_unit(index, seconds)
            self._window_left -= 1
        elif self._window_left == 2:
            # Its end is the baseline of the one unit measured next.
            self._previous = sites.aggregate(_get_traces(), self._is_own)
            self._record_detect_unit(index, seconds)
            self._window_left -= 1
        elif self._window_left == 1:
            self.observer.window_base = (  # type: ignore[attr-defined]
                self._previous.total_bytes, self._previous.total_blocks)
            self._record_measured(index, seconds)
            self._window_left = 0
            # Sites need their tracebacks, and tracemalloc forgets them at stop.
            for key, frames in sites.dominant_tracebacks(
                _get_traces(), self._is_own, TRACEBACK_LINES
            ).items():
                self._window_tracebacks[key] = frames
            tracemalloc.stop()
            self._untraced_run = 0
        else:
            self._record_detect_unit(index, seconds)
            self._untraced_run += 1
            if self._untraced_run >= self.sample - WINDOW_UNITS:
                tracemalloc.start(self.settings.frames)
                self._window_left = WINDOW_UNITS
        self._last_time = time.perf_counter()
        self.harness_seconds += self._last_time - started
        return True

    def _record_detect_unit(self, index: int, seconds: float) -> None:
        """A fast-mode detect loop, with no preallocated array to fill."""
        import sys

        from leakscope import counters

        loop = {
            "index": index, "warmup": False, "phase": "detect",
            "rss_bytes": counters.rss_bytes(), "malloc_bytes": counters.malloc_in_use(),
            "allocated_blocks": sys.getallocatedblocks(),
            "gc_collections": self._gc_counter.collections, "seconds": seconds,
        }
        self.measured += 1
        self.observer.on_loop(loop, [])


class _JoinedWindows:
    """--sample: each window's traced figures continue the previous window's.

    tracemalloc restarts at every window, so its totals start from zero each
    time; the decision rule wants one series of what the traced units kept,
    so each window's gain is added to the sum of the earlier ones.
    """

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.window_base = (0, 0)
        self.kept_bytes = 0
        self.kept_blocks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.observer, name)

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        if loop.get("traced_bytes") is not None:
            self.kept_bytes += loop["traced_bytes"] - self.window_base[0]
            self.kept_blocks += loop["traced_blocks"] - self.window_base[1]
            loop["traced_bytes"] = self.kept_bytes
            loop["traced_blocks"] = self.kept_blocks
        self.observer.on_loop(loop, changes)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0
