"""Runs warm-up and measured loops, owns tracemalloc, hands each loop to an observer.

The collector is driven by ``end_loop()``: the harness calls it after every
``iteration()``, and a worker with its own loop reaches it through
``leakscope.tick()``. It never prints; the observer decides what a loop
becomes (a live line, a progress tick, a message to the parent process).
It holds what every phase shares (settings, observer, counters, the traced
window's state) and hands each loop to the current phase (leakscope.measure.phases),
which returns the phase for the next one.

Two modes. Full mode traces every measured loop. Fast mode measures them
untraced with cheap counters (allocated blocks, malloc's in-use bytes, RSS,
gc collections: ``phases.DetectPhase``), applies the same decision rule to them,
and only when they show growth turns tracemalloc on for ``locate_loops``
loops to find the sites, holders and kind. A loop that does not grow is never
traced. Telling the kinds apart needs no ``gc.collect()`` per loop: the
locate loops' traced window shows whether Python objects grow (else the
growth is native), and the one collection after the last loop shows whether
that growth was unreachable cycles.

Why tracemalloc starts only after warm-up: a snapshot costs time in
proportion to the traces it holds. Started late, tracemalloc holds only what
the measured window allocated and kept, so the per-loop cost does not grow
with the heap the worker built before (1,000,000 objects cost nothing here).
"""

from __future__ import annotations

import _thread
import gc
import math
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any, Protocol

from leakscope.measure import counters, hook
from leakscope.measure.phases import (
    DetectPhase,
    FinishedPhase,
    Phase,
    TracedPhase,
    TraceWindow,
    WarmupPhase,
    get_traces,
)
from leakscope.model import sites
from leakscope.model.settings import Settings

# Holder checkpoints, as fractions of the measured loops. Walking the heap
# costs far more than a loop's diff, so it runs at these few points only.
CHECKPOINTS = (0.0, 0.25, 0.5, 0.75, 1.0)
# Tracebacks are kept for this many of the biggest lines at the end of a run.
TRACEBACK_LINES = 200
# The back-reference search looks for a line that kept at least this much
# more per traced loop than when tracing began.
BACKREF_MIN_LINE_RATE = 16
# The per-line diff reads every live trace, so its cost grows with what the
# window has kept; the totals (traced bytes and blocks, counters) are O(1)
# reads made every loop. The diff's time budget, averaged over the loops one
# diff spans: DIFF_SHARE of the worker's own loop time, or DIFF_FLOOR_SECONDS
# when that is more (a diff that fits under the floor runs every loop) ...
DIFF_SHARE = 0.2
DIFF_FLOOR_SECONDS = 0.0001
# ... and at least one diff per this many parts of the loops traced so far,
# so that each line's series is a staircase of steps (its slope is its rate,
# and the last quarter of the run always holds a step). Each diff costs in
# proportion to the traces kept, so these forced diffs cost about
# (DIFF_MIN_STEPS + 1) full reads of the run's final traces in all.
DIFF_MIN_STEPS = 6
# The first DIFF_EXACT_LOOPS traced loops are diffed one by one, whatever the
# budget, as long as a diff reads fewer than DIFF_EXACT_TRACES traces
# (leakscope's own included): so few traces cannot make a diff dear, and a
# short run (the default 50 iterations and every scenario, which keep a few
# hundred traces) keeps exact lines and totals for every loop. Between two
# diffs the totals are O(1) readings, exact for the worker's growth but not
# for leakscope's own (free lists hand objects back and forth), and the
# native estimate takes a one-off step of a few KiB when diffs start to
# space out: a long run's rule reads past both, a short one's might not. A
# worker that keeps hundreds of blocks a loop leaves the exact stretch
# early, since there each diff costs milliseconds (a 2,000-loop cycle leak
# of 158 blocks a loop: 10,000 traces after about 50 loops).
DIFF_EXACT_LOOPS = 200
DIFF_EXACT_TRACES = 10_000

# count_threads reads every thread's state at least this often (in loops).
THREADS_RESCAN = 64


class Observer(Protocol):
    def on_measuring(self, warmup_loops: int) -> None: ...
    def on_phase(self, phase: str, info: dict[str, Any]) -> None: ...
    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None: ...
    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None: ...


class HolderProbe(Protocol):
    """What the collectors use of ``holders.HolderProbe`` (imported only when it is on)."""

    checkpoints: int
    walk_seconds: float
    backref: dict[str, Any] | None

    def observe(self, final: bool = False, again: bool = False) -> dict[str, Any]: ...
    def start_observe(self) -> bool: ...
    @property
    def pending(self) -> bool: ...
    def pending_ready(self) -> bool: ...
    def finish_pending(self) -> dict[str, Any] | None: ...
    def drop_pending(self, reap: bool) -> None: ...
    def describe_now(self) -> bool: ...
    def start_describe(self) -> bool: ...
    @property
    def describing(self) -> bool: ...
    def describe_ready(self) -> bool: ...
    def finish_describe(self) -> bool: ...
    def drop_describe(self, reap: bool) -> None: ...
    def describe_known(self) -> bool: ...
    def growing_paths(self) -> list[str]: ...
    def start_locating(self, caller: Any) -> bool: ...
    def stop_locating(self) -> None: ...
    def report(self) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...


class UnitObserver(Observer, Protocol):
    """What a worker process reports beyond a script's loops (``agent.WorkerObserver``)."""

    def on_lines(self, changes: list[tuple[str, int, int, int]]) -> None: ...
    def on_holders(self, report: dict[str, Any]) -> None: ...
    def on_window(self, described: dict[str, Any]) -> None: ...


class DiffSchedule:
    """Which traced loops get a per-line diff, so that diffs cost a bounded time per loop.

    After each diff, the next one waits as many loops as its cost needs to
    stay within the budget, averaged over those loops. A diff that took 20 ms
    in a 10 ms loop (2 ms budget) is due again after ten loops, and reports
    the changes of all ten: a diff is exact over the loops it spans. As the
    kept traces grow, diffs grow dearer and rarer in the same proportion, so
    the cost per loop stays flat however long the run is.
    """

    def __init__(
        self, share: float = DIFF_SHARE, floor: float = DIFF_FLOOR_SECONDS,
        max_gap: int | None = None, exact_loops: int = DIFF_EXACT_LOOPS,
        exact_traces: int = DIFF_EXACT_TRACES, min_steps: int = DIFF_MIN_STEPS,
    ) -> None:
        self.share = share
        self.floor = floor
        self.max_gap = max_gap
        self.exact_loops = exact_loops
        self.exact_traces = exact_traces
        self.min_steps = min_steps
        self.gap = 1
        # The traced loops the run will have, when known (a real worker's window):
        # its diffs are spaced by that length, not by the loops so far.
        self.horizon: int | None = None
        # Traced loops since the last diff, and the worker's loop time, smoothed.
        self.skipped = 0
        self.loop_seconds: float | None = None

    def observe(self, seconds: float) -> None:
        """One traced loop of the worker took ``seconds``."""
        self.loop_seconds = seconds if self.loop_seconds is None else (
            0.9 * self.loop_seconds + 0.1 * seconds)

    def due(self) -> bool:
        return self.skipped >= self.gap - 1

    def skip(self) -> None:
        self.skipped += 1

    def diffed(self, spent: float, traced: int, traces: int = 0) -> None:
        """A diff of ``traces`` live traces took ``spent`` seconds after ``traced`` traced
        loops: place the next one."""
        self.skipped = 0
        budget = max(self.share * (self.loop_seconds or 0.0), self.floor)
        affordable = math.ceil(spent / budget) if budget > 0 else 1
        exact = traced < self.exact_loops and traces < self.exact_traces
        # At least min_steps diffs over the loops so far, or over the whole run
        # when its length is known: a 60-unit window diffed every one of its
        # first 20 units (5-7 ms each in a Celery pool child) for one tenth's
        # resolution it gets at every sixth.
        span = traced if self.horizon is None else max(traced, self.horizon)
        cap = 1 if exact else max(1, span // self.min_steps)
        if self.max_gap is not None:
            cap = min(cap, self.max_gap)
        self.gap = max(1, min(affordable, cap))


class Collector:
    """One measured run of a loop, fed by ``end_loop()`` after each iteration.

    A small driver: it times each loop and hands it to the current phase
    (leakscope.measure.phases), and it owns what the phases share and what the end
    of a run needs whichever phase it ends in (the final collection, the
    holder walks, the back-reference search, ``finish()``). ``phases`` is the
    sequence after warm-up; by default the one ``settings.mode`` asks for.
    """

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        holder_probe: HolderProbe | None = None,
        plan: Callable[[Collector], Phase] | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.holder_probe = holder_probe
        self.index = 0
        self.measured = 0
        self.warmup_loops = 0
        self.measuring = False
        # Loops measured with tracemalloc on.
        self.traced = 0
        self.is_own = sites.OwnFilter()
        self.window = TraceWindow()
        self.detection: dict[str, Any] = {}
        self.gc_counter = counters.GcCounter()
        self.tracemalloc_was_on = tracemalloc.is_tracing()
        # The process's RSS just before this run started tracemalloc, with all of
        # leakscope's in-process modules loaded: what `leakscope attach` must
        # leave the process at (tracing's own memory is what comes after it).
        self.rss_before_tracing: int | None = None
        self._last_time = time.perf_counter()
        self.harness_seconds = 0.0
        self._gc_enabled = gc.isenabled()
        # What only the end of the traced loops can see (tracebacks, the final
        # collection), once observed.
        self.end: dict[str, Any] | None = None
        # The last traced loop's read of the traces, with the tracebacks the end
        # needs (line_totals(last=True)): observe_end uses it instead of a
        # second full read of the same traces.
        self._end_read: tuple[int, sites.LineTotals, dict] | None = None
        # Traced bytes at each holder checkpoint: the fallback's cheap test.
        self._checkpoint_bytes: list[int] = []
        self._checkpoint_at = -1
        # The lines' totals and the traced-loop count at the second checkpoint:
        # what the back-reference fallback measures a line's growth from (from
        # the tracing's start, one unit's leftovers read as growth).
        self._line_base: tuple[int, sites.LineTotals] | None = None
        # Per-line diffs on a budget; between two, each loop's totals are read
        # in O(1) and corrected by what leakscope itself holds in the traced
        # heap (its own traces are left out of a diff's totals).
        self.diffs = DiffSchedule()
        # A real worker's process runs threads that allocate while we read.
        self.other_threads_allocate = False
        # Called once, when the last loop the run wants is recorded: from then
        # on only leakscope's own finish is left (final collection, holder
        # walk), which a Ctrl-C should not cut. The harness tells its parent.
        self.on_gathered: Callable[[], None] | None = None
        # Most threads of the worker's, besides the loop's own, seen alive at a
        # measured loop's end: they allocate on their own schedule, which the
        # analysis weighs. A test runner's threads (hook.threads_before) are not.
        self.other_threads_max = 0
        self._threads_running = -1
        self._thread_reads = 0
        # The memray locator's window over the locate loops (fast mode only),
        # and what the parent needs to read it (leakscope.measure.native_sites).
        self.memray: Any = None
        self.locator: dict[str, Any] = {}
        # The phases after warm-up, built now rather than when warm-up ends:
        # fast mode's preallocated series exist before the first loop.
        measuring = (plan or trace_plan)(self)
        warmup = settings.warmup
        self.phase: Phase = WarmupPhase(
            self, None if warmup == "auto" else int(warmup), measuring)

    # -------------------------------------------------------------- driving

    def begin(self) -> None:
        """Called once before the first loop."""
        self.gc_counter.__enter__()
        hook.install(self)
        warmup = self.phase
        assert isinstance(warmup, WarmupPhase)
        if warmup.target == 0:
            self.start_measuring()
            self._enter(warmup.following)
        self._last_time = time.perf_counter()

    def end_loop(self) -> bool:
        """Record the loop that just ended; False once enough loops are measured."""
        started = time.perf_counter()
        seconds = started - self._last_time
        index = self.index
        self.index += 1
        phase = self.phase
        following = phase.record(index, seconds)
        if following is not phase:
            self._enter(following)
        self._last_time = time.perf_counter()
        self.harness_seconds += self._last_time - started
        return following is not None

    def _enter(self, phase: Phase | None) -> None:
        if phase is None:
            self.phase = FinishedPhase()
        else:
            self.phase = phase
            phase.begin()

    def finish(self) -> dict[str, Any]:
        """Stop tracing and hand over what only the live process knows."""
        hook.install(None)
        self.gc_counter.__exit__()
        self.close_memray_window()  # interrupted inside the window
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        self.observe_end()  # interrupted, or a tick script that ended early
        final: dict[str, Any] = {
            "gc_enabled": self._gc_enabled,
            "gc_collections": self.gc_counter.collections,
            "warmup_loops": self.warmup_loops,
            "measured_loops": self.measured,
            "harness_seconds": self.harness_seconds,
            "trace_overhead_bytes": round(self.window.trace_overhead, 1),
            "malloc_counter": counters.has_malloc_counter(),
            "mode": self.settings.mode,
            "detection": self.detection,
            "other_threads_max": self.other_threads_max,
            "rss_before_tracing_bytes": self.rss_before_tracing,
            "locator": self.locator,
            **(self.end or {}),
        }
        if self.holder_probe is not None:
            final["holders"] = self.holder_probe.report()
        if self.measuring and tracemalloc.is_tracing() and not self.tracemalloc_was_on:
            tracemalloc.stop()
        return final

    # ------------------------------------------------ what the phases share

    def start_measuring(self) -> None:
        """Warm-up is over: the loops from here on are measured."""
        self.warmup_loops = self.index
        self.measuring = True

    def start_tracing(self, frames: int | None = None) -> None:
        """tracemalloc on (or its traces cleared), and the traced window's first totals."""
        if not tracemalloc.is_tracing():
            if self.rss_before_tracing is None:
                self.rss_before_tracing = counters.rss_bytes()
            tracemalloc.start(frames or self.settings.frames)
        else:
            tracemalloc.clear_traces()
        window = self.window
        window.trace_overhead = _calibrate_trace_overhead()
        window.previous = window.start = sites.aggregate(get_traces(), self.is_own)

    def count_threads(self) -> None:
        """Other threads alive now, read from the interpreter's thread states (C, no user
        code; the small dict it makes is leakscope's own).

        Read again only when the count of running Python threads changed, or every
        THREADS_RESCAN loops (a thread a C library made is not in that count): the
        read makes a dict and a frame object per thread, under tracemalloc.
        """
        running = _thread._count()
        self._thread_reads += 1
        if running == self._threads_running and self._thread_reads % THREADS_RESCAN:
            return
        self._threads_running = running
        ignored = hook.threads_before
        others = sum(
            1 for ident in sys._current_frames()
            if ident != _thread.get_ident() and ident not in ignored
        )
        if others > self.other_threads_max:
            self.other_threads_max = others

    def gathered(self) -> None:
        callback, self.on_gathered = self.on_gathered, None
        if callback is not None:
            callback()

    def close_memray_window(self) -> None:
        window, self.memray = self.memray, None
        if window is not None:
            self.locator = window.close(self.traced)

    def checkpoint(self, final: bool = False, traced_bytes: int | None = None) -> None:
        """Look at the live heap: container sizes and the gc object count.

        ``traced_bytes``: the worker's traced total now, when this loop was not
        diffed (by default, the last diff's)."""
        assert self.holder_probe is not None
        self.finish_checkpoint()  # a walk still in its copy is the earlier point
        kept = self.window.previous.total_bytes if traced_bytes is None else traced_bytes
        # No loop since the last walk (a worker exiting right after one): this
        # walk is that point again, not a new one equal to it.
        again = self._checkpoint_at == self.index and bool(self._checkpoint_bytes)
        self._checkpoint_at = self.index
        if again:
            self._checkpoint_bytes[-1] = kept
        else:
            self._note_checkpoint(kept)
        observation = self.holder_probe.observe(final=final, again=again)
        observation["gc_objects"] = len(gc.get_objects())
        self.observer.on_checkpoint(self.index, observation)

    def start_checkpoint(self, traced_bytes: int | None = None) -> bool:
        """A checkpoint whose walk runs in a forked copy while the worker goes on (a real
        worker's: waiting stalled it 0.2-0.3 s a walk); ``finish_checkpoint`` sends it.
        False where it cannot (no fork, or no unit since the last walk): the caller
        then takes the checkpoint as ``checkpoint`` does."""
        probe = self.holder_probe
        assert probe is not None
        self.finish_checkpoint()
        if self._checkpoint_at == self.index or not probe.start_observe():
            return False
        self._note_checkpoint(
            self.window.previous.total_bytes if traced_bytes is None else traced_bytes)
        self._checkpoint_at = self.index
        return True

    def _note_checkpoint(self, kept: int) -> None:
        """A new checkpoint's traced bytes; at the second, the lines' totals too."""
        self._checkpoint_bytes.append(kept)
        if len(self._checkpoint_bytes) == 2:
            self._line_base = (self.traced, self.window.previous)

    def finish_checkpoint(self) -> bool:
        """Send the pending walk's checkpoint, at the loop it was taken (waits for its
        copy if it has not answered); False when no walk was pending."""
        probe = self.holder_probe
        if probe is None:
            return False
        observation = probe.finish_pending()
        if observation is None:
            return False
        observation.setdefault("gc_objects", len(gc.get_objects()))
        self.observer.on_checkpoint(self._checkpoint_at, observation)
        return True

    def line_totals(self, last: bool = False) -> sites.LineTotals:
        """The worker's bytes and blocks per line now: one full read of the traces.

        ``last``: the last traced loop's read, which observe_end (called in the
        same loop's end, no code of the worker's in between) takes as its own; not where
        other threads allocate meanwhile. The read is the run's largest, so
        sharing it saves its cost once (~0.12 s at 320,000 traces).
        """
        if last and self.end is None and not self.other_threads_allocate:
            totals, tracebacks = sites.aggregate_with_tracebacks(
                get_traces(), self.is_own, TRACEBACK_LINES)
            self._end_read = (self.index, totals, tracebacks)
            return totals
        return sites.aggregate(get_traces(), self.is_own)

    def observe_end(self) -> None:
        """Dominant tracebacks of the biggest lines, then one full collection.

        Runs right after the last traced loop is recorded, before the final
        holder walk: the walk's own work churns the interpreter's free lists,
        and the figures here must describe the state the last loop left.
        """
        if self.end is not None:
            return
        self._gc_enabled = gc.isenabled()
        self.end = {}
        if not (self.measuring and tracemalloc.is_tracing()):
            return
        # The totals before the collection, from the same read of the traces:
        # the last loop's diff's, when nothing ran in between.
        read, self._end_read = self._end_read, None
        if read is not None and read[0] == self.index:
            _, before, tracebacks = read
        else:
            before, tracebacks = sites.aggregate_with_tracebacks(
                get_traces(), self.is_own, TRACEBACK_LINES)
        self.end["tracebacks"] = [
            [list(key), [list(frame) for frame in frames]] for key, frames in tracebacks.items()
        ]
        self.end["gc_final"] = self._measure_final_collect(set(tracebacks), before)

    def backref_fallback(self, in_copy: bool = False) -> None:
        """No holder found by the forward walk, yet the window kept memory.

        Ask objgraph for the chain from a module to an object made at the
        line that kept most after the final collection (heap.backrefs), in a
        forked copy: objgraph is the tool's library, not the worker's, and its
        search collects garbage; the worker sees neither. ``in_copy``: this
        process is already such a copy (a window's), which searches itself.
        """
        probe = self.holder_probe
        final = self.end.get("gc_final") if self.end else None
        if probe is None or not final or probe.growing_paths():
            return
        kept = self._checkpoint_bytes
        rising = len(kept) >= 3 and all(b > a for a, b in zip(kept, kept[1:]))
        if not rising or final["bytes_after"] - kept[0] < (kept[-1] - kept[0]) / 2:
            return  # the window did not keep (reachable) growth: nothing to look for
        lines = {(f, n) for f, n in final.get("top_surviving_lines", [])}
        # Only a line of the user's that kept more than it held at the second
        # checkpoint (when tracing began, before that): a framework's worker
        # keeps objects from the interpreter's free lists under the lines that
        # first made them, and a window that starts tracing mid-run reads what
        # its first unit left as kept.
        since, base = self._line_base or (0, self.window.start)
        kept_at = {(f, n): b for f, n, b in final.get("kept_by_line", [])}
        lines = {key for key in lines
                 if kept_at.get(key, 0) - base.by_line.get(key, [0, 0])[0]
                 >= BACKREF_MIN_LINE_RATE * max(1, self.traced - since)}
        if not lines:
            return
        if in_copy:
            from leakscope.heap.backrefs import find_by_backrefs

            probe.backref = find_by_backrefs(lines)
        else:
            from leakscope.heap.fork import backrefs_in_fork

            probe.backref = backrefs_in_fork(lines)
        if probe.backref and probe.backref.get("path"):
            # Its items made while traced, over this many units: its rate.
            probe.backref["traced_units"] = self.traced

    def _measure_final_collect(
        self, lines: set[tuple[str, int]], before: sites.LineTotals,
    ) -> dict[str, Any]:
        """Run one full collection after the last loop and see what it frees.

        Growth that a collection frees was unreachable cycles (the kind
        ``cyclic-garbage``); we do this once, after measuring, because a
        collection before every snapshot would hide exactly that growth.
        """
        collected = gc.collect()
        after = sites.aggregate(get_traces(), self.is_own)
        freed_by_line = []
        surviving = [
            key for key in sorted(after.by_line, key=lambda k: after.by_line[k][0], reverse=True)
            if key in lines and sites.is_user_file(key[0])
        ]
        kept_by_line = [[key[0], key[1], before.by_line.get(key, [0, 0])[0]] for key in lines]
        for key in lines:
            was = before.by_line.get(key, [0, 0])
            now = after.by_line.get(key, [0, 0])
            if was[0] != now[0]:
                freed_by_line.append([key[0], key[1], was[0] - now[0], was[1] - now[1]])
        return {
            "objects_collected": collected,
            "bytes_before": before.total_bytes,
            "bytes_after": after.total_bytes,
            "blocks_before": before.total_blocks,
            "blocks_after": after.total_blocks,
            "freed_by_line": freed_by_line,
            "kept_by_line": kept_by_line,
            "top_surviving_lines": [list(key) for key in surviving[:5]],
        }


def trace_plan(engine: Collector) -> Phase:
    """``leakscope trace`` and the pytest plugin: fast mode's detect, or full tracing."""
    iterations = engine.settings.iterations
    if engine.settings.mode == "fast":
        return DetectPhase(engine, iterations)
    return TracedPhase(engine, iterations, {round(f * iterations) for f in CHECKPOINTS})


def _calibrate_trace_overhead(samples: int = 3, objects: int = 2000) -> float:
    """Bytes of malloc that tracemalloc spends per live trace beyond what it reports.

    ``get_tracemalloc_memory()`` leaves out part of each trace's hash-table
    entry (about 48 bytes on CPython 3.11). Unaccounted, that overhead makes
    every Python leak look like native growth too, so we measure it once,
    with objects allocated here and freed at once.
    """
    if not counters.has_malloc_counter() or not tracemalloc.is_tracing():
        return 0.0
    estimates = []
    for _ in range(samples):
        # `or 0` for the type checker only: has_malloc_counter() said it reads.
        before = (counters.malloc_in_use() or 0) - tracemalloc.get_tracemalloc_memory()
        traced_before = tracemalloc.get_traced_memory()[0]
        held = [object() for _ in range(objects)]
        after = (counters.malloc_in_use() or 0) - tracemalloc.get_tracemalloc_memory()
        # The list's own storage is one large block that malloc holds too.
        traced = tracemalloc.get_traced_memory()[0] - traced_before
        storage = traced - objects * sys.getsizeof(held[0])
        estimates.append(max(0.0, (after - before - storage) / (objects + 1)))
        del held
    estimates.sort()
    return estimates[len(estimates) // 2]
