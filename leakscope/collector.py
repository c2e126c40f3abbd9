"""Runs warm-up and measured loops, owns tracemalloc, hands each loop to an observer.

The collector is driven by ``end_loop()``: the harness calls it after every
``iteration()``, and a worker with its own loop reaches it through
``leakscope.tick()``. It never prints; the observer decides what a loop
becomes (a live line, a progress tick, a message to the parent process).

Two modes. Full mode traces every measured loop. Fast mode measures them
untraced with cheap counters (allocated blocks, malloc's in-use bytes, RSS,
gc collections: ``_record_detect``), applies the same decision rule to them,
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
from array import array
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from leakscope import counters, hook, sites
from leakscope.settings import AUTO_WARMUP_MAX, AUTO_WARMUP_MIN, AUTO_WARMUP_STEADY, Settings

if TYPE_CHECKING:
    from tracemalloc import _TraceTuple  # typeshed's name for a raw trace

try:  # The raw trace list; the public Snapshot wraps the same tuples.
    from _tracemalloc import _get_traces as get_traces
except ImportError:  # pragma: no cover - every CPython 3.10-3.13 has it
    def get_traces() -> Sequence[_TraceTuple]:
        return tracemalloc.take_snapshot().traces._traces  # type: ignore[attr-defined]

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
# when that is more (a diff that fits under the floor runs every loop, so a
# run that keeps little is diffed loop by loop, as before) ...
DIFF_SHARE = 0.2
DIFF_FLOOR_SECONDS = 0.0005
# ... and at least one diff per this many parts of the loops traced so far,
# so that each line's series is a staircase of many steps (its slope is its
# rate, and the last quarter of the run always holds a step).
DIFF_MIN_STEPS = 10
# The first this many traced loops are diffed one by one, whatever the cost:
# so few loops cannot keep enough traces to make a diff dear, and a short run
# (the default 50 iterations, every scenario, the 200 of a stability check)
# keeps exact lines and totals for every loop. Between two diffs the totals
# are O(1) readings, exact for the worker's growth but not for leakscope's
# own (free lists hand objects back and forth), and the native estimate
# takes a one-off step of a few KiB when diffs start to space out: a long
# run's rule reads past both, a short one's might not.
DIFF_EXACT_LOOPS = 200
# tracemalloc's frames per allocation in fast mode's locate loops when memray,
# the locator, records the full Python stacks beside it.
LOCATE_FRAMES_WITH_MEMRAY = 3


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

    def observe(self, final: bool = False) -> dict[str, Any]: ...
    def describe_now(self) -> bool: ...
    def growing_paths(self) -> list[str]: ...
    def start_locating(self, caller: Any) -> bool: ...
    def stop_locating(self) -> None: ...
    def report(self) -> dict[str, Any]: ...
    def snapshot(self) -> dict[str, Any]: ...


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
    ) -> None:
        self.share = share
        self.floor = floor
        self.max_gap = max_gap
        self.exact_loops = exact_loops
        self.gap = 1
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

    def diffed(self, spent: float, traced: int) -> None:
        """A diff took ``spent`` seconds after ``traced`` traced loops: place the next one."""
        self.skipped = 0
        budget = max(self.share * (self.loop_seconds or 0.0), self.floor)
        affordable = math.ceil(spent / budget) if budget > 0 else 1
        cap = max(1, traced // DIFF_MIN_STEPS) if traced >= self.exact_loops else 1
        if self.max_gap is not None:
            cap = min(cap, self.max_gap)
        self.gap = max(1, min(affordable, cap))


class Collector:
    """One measured run of a loop, fed by ``end_loop()`` after each iteration."""

    def __init__(
        self,
        settings: Settings,
        observer: Observer,
        holder_probe: HolderProbe | None = None,
    ) -> None:
        self.settings = settings
        self.observer = observer
        self.holder_probe = holder_probe
        self.index = 0
        self.measured = 0
        self.warmup_loops = 0
        self.measuring = False
        self._is_own = sites.OwnFilter()
        self._previous = self._window_start = sites.LineTotals()
        self._blocks_history: list[int] = []
        self.fast = settings.mode == "fast"
        # Loops measured with tracemalloc on, and how many are wanted: all the
        # measured loops in full mode; in fast mode only the locate loops, and
        # only once the cheap counters have shown growth.
        self.traced = 0
        self._traced_target = 0 if self.fast else settings.iterations
        self._checkpoints = self._checkpoint_indices(self._traced_target)
        # Preallocated: appending a float per loop would itself show up as
        # one more allocated block per loop in the counter we are reading.
        size = 8 * settings.iterations if self.fast else 0
        self._detect_blocks = array("d", bytes(size))
        self._detect_malloc = array("d", bytes(size))
        self.detection: dict[str, Any] = {}
        self._gc_counter = counters.GcCounter()
        self._tracemalloc_was_on = tracemalloc.is_tracing()
        self._last_time = time.perf_counter()
        self.harness_seconds = 0.0
        self._trace_overhead = 0.0
        self._gc_enabled = gc.isenabled()
        self._end: dict[str, Any] | None = None
        self._locating = False
        # Traced bytes at each holder checkpoint: the fallback's cheap test.
        self._checkpoint_bytes: list[int] = []
        # Per-line diffs on a budget; between two, each loop's totals are read
        # in O(1) and corrected by what leakscope itself holds in the traced
        # heap (its own traces are left out of a diff's totals).
        self.diffs = DiffSchedule()
        self._own_bytes = 0
        self._allocated_at_diff = 0
        # A real worker's process runs threads that allocate while we read.
        self.other_threads_allocate = False
        self._last_traced: int | None = None
        self._blocks_base = 0
        # Called once, when the last loop the run wants is recorded: from then
        # on only leakscope's own finish is left (final collection, holder
        # walk), which a Ctrl-C should not cut. The harness tells its parent.
        self.on_gathered: Callable[[], None] | None = None
        # Most threads of the worker's, besides the loop's own, seen alive at a
        # measured loop's end: they allocate on their own schedule, which the
        # analysis weighs. A test runner's threads (hook.threads_before) are not.
        self.other_threads_max = 0
        # The memray locator's window over the locate loops (fast mode only),
        # and what the parent needs to read it (leakscope.native_sites).
        self._memray: Any = None
        self.locator: dict[str, Any] = {}

    @staticmethod
    def _checkpoint_indices(iterations: int) -> set[int]:
        return {round(f * iterations) for f in CHECKPOINTS}

    # -------------------------------------------------------------- driving

    def begin(self) -> None:
        """Called once before the first loop."""
        self._gc_counter.__enter__()
        hook.install(self)
        if self._warmup_target() == 0:
            self._start_measuring()
        self._last_time = time.perf_counter()

    def end_loop(self) -> bool:
        """Record the loop that just ended; False once enough loops are measured."""
        started = time.perf_counter()
        seconds = started - self._last_time
        index = self.index
        self.index += 1
        if not self.measuring:
            self._record_warmup(index, seconds)
            if self._warmup_finished():
                self._start_measuring()
            more = True
        elif self.fast and self._traced_target == 0:
            self._count_threads()
            self._record_detect(index, seconds)
            more = True
            if self.measured >= self.settings.iterations:
                if self._growth_detected():
                    self._start_locate_phase()
                else:
                    self._gathered()
                    self._observe_end()
                    more = False
        elif self._locating:
            # The extra loop that found which line grows each holder is over.
            self.index -= 1
            self._locating = False
            assert self.holder_probe is not None
            self.holder_probe.stop_locating()
            self._observe_end()
            more = False
        else:
            self._count_threads()
            self._record_measured(index, seconds)
            more = self.traced < self._traced_target
            if not more:
                if self.holder_probe is not None and self.holder_probe.start_locating(
                    sys._getframe(1)
                ):
                    self._locating = True
                    more = True
                else:
                    # Observe now, while the worker's frames and a tick script's
                    # globals are still alive: StopTracing is about to unwind them.
                    self._observe_end()
        self._last_time = time.perf_counter()
        self.harness_seconds += self._last_time - started
        return more

    def _count_threads(self) -> None:
        """Other threads alive now, read from the interpreter's thread states (C, no user
        code; the small dict it makes is leakscope's own)."""
        ignored = hook.threads_before
        others = sum(
            1 for ident in sys._current_frames()
            if ident != _thread.get_ident() and ident not in ignored
        )
        if others > self.other_threads_max:
            self.other_threads_max = others

    def finish(self) -> dict[str, Any]:
        """Stop tracing and hand over what only the live process knows."""
        hook.install(None)
        self._gc_counter.__exit__()
        self._close_memray_window()  # interrupted inside the window
        if self.holder_probe is not None:
            self.holder_probe.stop_locating()
        self._observe_end()  # interrupted, or a tick script that ended early
        final: dict[str, Any] = {
            "gc_enabled": self._gc_enabled,
            "gc_collections": self._gc_counter.collections,
            "warmup_loops": self.warmup_loops,
            "measured_loops": self.measured,
            "harness_seconds": self.harness_seconds,
            "trace_overhead_bytes": round(self._trace_overhead, 1),
            "malloc_counter": counters.has_malloc_counter(),
            "mode": self.settings.mode,
            "detection": self.detection,
            "other_threads_max": self.other_threads_max,
            "locator": self.locator,
            **(self._end or {}),
        }
        if self.holder_probe is not None:
            final["holders"] = self.holder_probe.report()
        if self.measuring and tracemalloc.is_tracing() and not self._tracemalloc_was_on:
            tracemalloc.stop()
        return final

    def _gathered(self) -> None:
        callback, self.on_gathered = self.on_gathered, None
        if callback is not None:
            callback()

    def _observe_end(self) -> None:
        """Dominant tracebacks of the biggest lines, then one full collection.

        Runs right after the last traced loop is recorded, before the final
        holder walk: the walk's own work churns the interpreter's free lists,
        and the figures here must describe the state the last loop left.
        """
        if self._end is not None:
            return
        self._gc_enabled = gc.isenabled()
        self._end = {}
        if not (self.measuring and tracemalloc.is_tracing()):
            return
        traces = get_traces()
        tracebacks = sites.dominant_tracebacks(traces, self._is_own, TRACEBACK_LINES)
        del traces
        self._end["tracebacks"] = [
            [list(key), [list(frame) for frame in frames]] for key, frames in tracebacks.items()
        ]
        self._end["gc_final"] = self._measure_final_collect(set(tracebacks))

    def _backref_fallback(self) -> None:
        """No holder found by the forward walk, yet the window kept memory.

        Ask objgraph for the chain from a module to an object made at the
        line that kept most after the final collection (holders.find_by_backrefs).
        """
        probe = self.holder_probe
        final = self._end.get("gc_final") if self._end else None
        if probe is None or not final or probe.growing_paths():
            return
        kept = self._checkpoint_bytes
        rising = len(kept) >= 3 and all(b > a for a, b in zip(kept, kept[1:]))
        if not rising or final["bytes_after"] - kept[0] < (kept[-1] - kept[0]) / 2:
            return  # the window did not keep (reachable) growth: nothing to look for
        lines = {(f, n) for f, n in final.get("top_surviving_lines", [])}
        start = self._window_start.by_line
        kept_at = {(f, n): b for f, n, b in final.get("kept_by_line", [])}
        # Only a line of the user's that kept more than it held when tracing
        # began: a framework's worker keeps objects from the interpreter's
        # free lists under the lines that first made them.
        lines = {key for key in lines
                 if kept_at.get(key, 0) - start.get(key, [0, 0])[0]
                 >= BACKREF_MIN_LINE_RATE * max(1, self.traced)}
        if not lines:
            return
        from leakscope.holders import find_by_backrefs

        probe.backref = find_by_backrefs(lines)

    # ------------------------------------------------------------- internals

    def _warmup_target(self) -> int | None:
        warmup = self.settings.warmup
        return None if warmup == "auto" else int(warmup)

    def _warmup_finished(self) -> bool:
        target = self._warmup_target()
        if target is not None:
            return self.index >= target
        return self._auto_warmup_settled()

    def _auto_warmup_settled(self) -> bool:
        """Warm-up has settled when per-loop block growth has stopped changing.

        A steady rate, zero or not, is what the measured window must see: a
        leak grows steadily from the start, while warm-up growth (imports,
        first-call caches) dies away.
        """
        if self.index >= AUTO_WARMUP_MAX:
            return True
        history = self._blocks_history
        if self.index < AUTO_WARMUP_MIN or len(history) < AUTO_WARMUP_STEADY + 1:
            return False
        recent = history[-(AUTO_WARMUP_STEADY + 1):]
        deltas = [b - a for a, b in zip(recent, recent[1:])]
        spread = max(deltas) - min(deltas)
        return spread <= max(2, 0.1 * abs(sorted(deltas)[len(deltas) // 2]))

    def _record_warmup(self, index: int, seconds: float) -> None:
        blocks = sys.getallocatedblocks()
        self._blocks_history.append(blocks)
        loop = {
            "index": index,
            "warmup": True,
            "phase": "warmup",
            "rss_bytes": counters.rss_bytes(),
            "allocated_blocks": blocks,
            "native_bytes": counters.malloc_in_use(),
            "gc_collections": self._gc_counter.collections,
            "seconds": seconds,
        }
        self.observer.on_loop(loop, [])

    def _start_measuring(self) -> None:
        self.warmup_loops = self.index
        self.measuring = True
        if self.fast:
            self.observer.on_measuring(self.warmup_loops)
            return
        self._start_tracing()

    def _start_tracing(self, frames: int | None = None) -> None:
        if not tracemalloc.is_tracing():
            tracemalloc.start(frames or self.settings.frames)
        else:
            tracemalloc.clear_traces()
        self._trace_overhead = _calibrate_trace_overhead()
        self._previous = self._window_start = sites.aggregate(get_traces(), self._is_own)
        if not self.fast:
            self.observer.on_measuring(self.warmup_loops)
        if self.holder_probe is not None and 0 in self._checkpoints:
            self._checkpoint()

    # ------------------------------------------------------------ fast mode

    def _record_detect(self, index: int, seconds: float) -> None:
        """Fast mode: a handful of reads whose cost does not grow with the heap."""
        blocks = sys.getallocatedblocks()
        malloc = counters.malloc_in_use()
        self._detect_blocks[self.measured] = blocks
        self._detect_malloc[self.measured] = malloc or 0
        loop = {
            "index": index,
            "warmup": False,
            "phase": "detect",
            "rss_bytes": counters.rss_bytes(),
            "malloc_bytes": malloc,
            "allocated_blocks": blocks,
            "gc_collections": self._gc_counter.collections,
            "seconds": seconds,
        }
        self.measured += 1
        self.observer.on_loop(loop, [])

    def _growth_detected(self) -> bool:
        """The full mode's rule, on allocated blocks and on malloc's in-use bytes.

        Small Python objects show in the block count, large ones and C
        allocations in malloc's counter; either rising is worth locating.
        """
        from leakscope.analysis.stats import ratchet

        blocks = ratchet(list(self._detect_blocks))
        grew = blocks.leak
        malloc = None
        if counters.has_malloc_counter():
            malloc = ratchet(list(self._detect_malloc))
            grew = grew or malloc.leak
        self.detection = {
            "blocks_p_value": blocks.p_value, "blocks_rate": round(blocks.slope, 3),
            "malloc_p_value": malloc.p_value if malloc else None,
            "malloc_rate": round(malloc.slope, 1) if malloc else None,
            "growth": grew,
        }
        return grew

    def _start_locate_phase(self) -> None:
        """Growth seen: trace a few loops to find where it comes from.

        Three holder checkpoints (start, middle, end) are enough to see a
        container grow at every one of them over so few loops, and each walk
        here runs under tracemalloc, so fewer is cheaper.
        """
        self._traced_target = max(2, self.settings.locate_loops)
        self._checkpoints = {0, self._traced_target // 2, self._traced_target}
        self.observer.on_phase("locate", self.detection)
        window = self._prepare_memray_window()
        # With memray recording Python's allocators beside it, tracemalloc could
        # keep a few frames only: its cost grows with the depth (the JSON
        # churner: 15x untraced at 3 frames, 26x at 10), and memray's full
        # Python stacks would give the user's line of a deeper allocation
        # (native_sites.Capture.deep). Off for now: see PYTHON_ALLOCATORS.
        frames = None
        if window is not None and window.deep_stacks:
            frames = min(self.settings.frames, LOCATE_FRAMES_WITH_MEMRAY)
        self._start_tracing(frames)
        if window is not None:
            if window.open():
                self._memray = window
            else:
                self.locator = {"engine": "tracemalloc", "note": window.note}

    def _prepare_memray_window(self) -> Any:
        """memray over the locate loops too, when it is the locator: native sites.

        Imported before tracemalloc starts and opened after it and the first
        holder walk, so none of them is in either capture; a worker that runs
        its own Tracker keeps it, and the run locates with tracemalloc alone
        (the note says so).
        """
        if self.settings.locator == "tracemalloc" or not self.settings.capture_dir:
            return None
        from leakscope.memray_window import MIN_FRAMES, MemrayWindow

        if self.settings.frames < MIN_FRAMES:
            self.locator = {"engine": "tracemalloc", "note": (
                f"the memray locator needs --frames {MIN_FRAMES} or more; "
                "located with tracemalloc")}
            return None

        window = MemrayWindow(self.settings.capture_dir)
        if window.prepare():
            return window
        self.locator = {"engine": "tracemalloc", "note": window.note}
        return None

    def _close_memray_window(self) -> None:
        window, self._memray = self._memray, None
        if window is not None:
            self.locator = window.close(self.traced)

    def _record_measured(self, index: int, seconds: float) -> None:
        """One traced loop: totals and counters; per-line diff when due; holders at checkpoints."""
        self.diffs.observe(seconds)
        if self._diff_due():
            self._record_diffed(index, seconds)
        else:
            self._record_totals(index, seconds)
        last = self.traced == self._traced_target
        if last:
            self._close_memray_window()
            self._gathered()
            self._observe_end()
        if self.holder_probe is not None and self.traced in self._checkpoints:
            self._checkpoint(final=last)
        if last:
            self._backref_fallback()

    def _diff_due(self) -> bool:
        """The schedule's turn, the last traced loop, or a holder checkpoint's loop or the next.

        A checkpoint reads the diffed total; the loop after it is diffed
        because the walk moved leakscope's own bytes in the traced heap.
        """
        upcoming = self.traced + 1
        return (
            self.diffs.due() or upcoming == self._traced_target
            or upcoming in self._checkpoints or self.traced in self._checkpoints
        )

    def _record_diffed(self, index: int, seconds: float) -> None:
        """The per-line diff since the last one, exact over every loop it spans."""
        started = time.perf_counter()
        totals = sites.aggregate(get_traces(), self._is_own)
        changes = sites.diff(self._previous, totals)
        # What an observer in this process keeps of the loop (its record, and
        # the values in it) is leakscope's, but not in the traces just taken.
        before = tracemalloc.get_traced_memory()[0]
        malloc = counters.malloc_in_use()
        native = None
        if malloc is not None:
            # What the C allocator holds beyond Python's own large blocks and
            # tracemalloc's bookkeeping: memory only a C extension can own.
            native = int(
                malloc - totals.malloc_bytes - tracemalloc.get_tracemalloc_memory()
                - self._trace_overhead * totals.all_blocks
            )
        previous = self._previous.total_bytes if self._last_traced is None else self._last_traced
        loop = {
            "index": index,
            "warmup": False,
            "phase": "locate" if self.fast else "measure",
            "traced_bytes": totals.total_bytes,
            "traced_blocks": totals.total_blocks,
            "net_bytes": totals.total_bytes - previous,
            "rss_bytes": counters.rss_bytes(),
            "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory(),
            "native_bytes": native,
            "allocated_blocks": sys.getallocatedblocks(),
            "gc_collections": self._gc_counter.collections,
            "seconds": seconds,
            "harness_seconds": round(self.harness_seconds, 6),
        }
        if self.diffs.skipped:
            loop["span_from"] = index - self.diffs.skipped
        self._previous = totals
        self._last_traced = None
        self.measured += 1
        self.traced += 1
        self.observer.on_loop(loop, changes)
        del loop, changes
        kept = max(0, tracemalloc.get_traced_memory()[0] - before)
        # What leakscope itself holds in the traced heap, for the loops up to
        # the next diff: the traced total now less the worker's. In a process
        # whose other threads allocate (a real worker's) that reading also
        # holds what they allocated since the traces were taken (too much),
        # while the bytes left out of those same traces miss what leakscope
        # freed since (too much) or kept since (too little). There the smaller
        # is taken: it errs toward a loop between diffs reading high, which
        # the floors of the rule ignore; reading low would cut every earlier
        # floor down to it.
        after = tracemalloc.get_traced_memory()[0] - totals.total_bytes
        if self.other_threads_allocate:
            self._own_bytes = min(after, totals.other_bytes + kept)
        else:
            self._own_bytes = after
        self._blocks_base = self._allocated_at_diff = sys.getallocatedblocks()
        self.diffs.diffed(time.perf_counter() - started, self.traced)

    def _record_totals(self, index: int, seconds: float) -> None:
        """A loop between two diffs: traced bytes and blocks in O(1), counters, no lines.

        The traced bytes are tracemalloc's running total less leakscope's
        own; the traced blocks, the last diff's count moved by the change in
        the interpreter's allocated blocks since. The line changes of these
        loops arrive summed in the next diff, which names where its span began.
        """
        raw = tracemalloc.get_traced_memory()[0]
        allocated = sys.getallocatedblocks()
        # Never below the last diff: leakscope's own memory drifts between
        # two diffs (objects that the interpreter's free lists hand back and
        # forth keep the trace of whoever made them first), and a loop read
        # low would cut every earlier floor of the rule down to it, while one
        # read high is ignored by the floors; the next diff reads exactly.
        blocks = max(self._previous.total_blocks,
                     self._previous.total_blocks + allocated - self._blocks_base)
        traced = max(self._previous.total_bytes, raw - self._own_bytes)
        previous = self._previous.total_bytes if self._last_traced is None else self._last_traced
        malloc = counters.malloc_in_use()
        native = None
        if malloc is not None:
            # Every trace costs tracemalloc's bookkeeping: count the new ones too.
            all_blocks = self._previous.all_blocks + allocated - self._allocated_at_diff
            native = int(
                malloc - self._previous.malloc_bytes - tracemalloc.get_tracemalloc_memory()
                - self._trace_overhead * all_blocks
            )
        loop = {
            "index": index, "warmup": False, "phase": "locate" if self.fast else "measure",
            "traced_bytes": traced, "traced_blocks": blocks,
            "net_bytes": traced - previous, "rss_bytes": counters.rss_bytes(),
            "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory(),
            "native_bytes": native, "allocated_blocks": allocated,
            "gc_collections": self._gc_counter.collections, "seconds": seconds,
            "harness_seconds": round(self.harness_seconds, 6),
        }
        self._last_traced = traced
        self.measured += 1
        self.traced += 1
        self.diffs.skip()
        self.observer.on_loop(loop, [])
        del loop
        # An observer in this process (the pytest plugin's) keeps each loop's
        # record, values included: leakscope's own bytes and blocks, not the worker's.
        self._own_bytes += tracemalloc.get_traced_memory()[0] - raw
        self._blocks_base += sys.getallocatedblocks() - allocated


    def _checkpoint(self, final: bool = False) -> None:
        """Look at the live heap: container sizes and the gc object count."""
        assert self.holder_probe is not None
        self._checkpoint_bytes.append(self._previous.total_bytes)
        observation = self.holder_probe.observe(final=final)
        observation["gc_objects"] = len(gc.get_objects())
        self.observer.on_checkpoint(self.index, observation)

    def _measure_final_collect(self, lines: set[tuple[str, int]]) -> dict[str, Any]:
        """Run one full collection after the last loop and see what it frees.

        Growth that a collection frees was unreachable cycles (the kind
        ``cyclic-garbage``); we do this once, after measuring, because a
        collection before every snapshot would hide exactly that growth.
        """
        before = sites.aggregate(get_traces(), self._is_own)
        collected = gc.collect()
        after = sites.aggregate(get_traces(), self._is_own)
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
