"""The collector's phases: one strategy object per way of measuring a loop.

A run is a short sequence of phases, and the ``Collector`` only drives the
current one: each loop's ``record()`` returns the phase for the next loop
(itself, another, or None once the run has what it wants). The sequences:

- ``leakscope trace`` in full mode: warm-up, then ``TracedPhase`` (every loop
  traced, per-line diffs on a ``DiffSchedule``), then, when a holder's line
  is still unknown, one ``HolderLocatorPhase`` loop.
- fast mode: warm-up, ``DetectPhase`` (untraced counters), and only when they
  grow ``LocatePhase`` (a few traced loops, memray beside tracemalloc when it
  is the locator).
- a real worker's process (``leakscope run``/``attach``, open-ended units):
  warm-up, then either ``UnitTracedPhase`` for good (``--sample 1``), or
  ``WatchPhase`` (counters) until they grow, then a ``UnitTracedPhase``
  window of ``trace_units`` units, then watching again.

Why strategies rather than flags: each phase's per-loop work, its end and
what it announces are in one place, and a new way of measuring is a new
phase, not one more sentinel read by shared methods (coverage.py picks its
tracer the same way). Everything here runs in the measured process: only
the standard library and leakscope's in-process modules at top level.
"""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from leakscope.measure import counters
from leakscope.measure.watching import (
    MAX_WATCH_POINTS,
    CounterSpacing,
    RuleSchedule,
    WatchSeries,
)
from leakscope.model import sites
from leakscope.model.settings import AUTO_WARMUP_MAX, AUTO_WARMUP_MIN, AUTO_WARMUP_STEADY

if TYPE_CHECKING:
    from tracemalloc import _TraceTuple  # typeshed's name for a raw trace

    from leakscope.measure.collector import Collector, HolderProbe, UnitObserver

try:  # The raw trace list; the public Snapshot wraps the same tuples.
    from _tracemalloc import _get_traces as get_traces
except ImportError:  # pragma: no cover - every CPython 3.10-3.13 has it
    def get_traces() -> Sequence[_TraceTuple]:
        return tracemalloc.take_snapshot().traces._traces  # type: ignore[attr-defined]

# tracemalloc's frames per allocation in fast mode's locate loops when memray,
# the locator, records the full Python stacks beside it.
LOCATE_FRAMES_WITH_MEMRAY = 3

# A real worker's holder walks at these traced-unit counts, then every
# `checkpoint_every`; in a traced window, none but the first three in its
# last WINDOW_END_MARGIN units (a window needs MIN_TRACE_UNITS: three walks
# and one located unit).
EARLY_CHECKPOINTS = (0, 10, 30, 60)
WINDOW_END_MARGIN = 10
# The first walks always run (three show a container growing); later ones
# are skipped while walking has taken more than this share of the time.
EARLY_WALKS = 3
WALK_BUDGET = 0.1
# A window with at least this many units left after its third walk does not
# wait for that walk, nor for the description of its growers: both answer
# from their copies some units later, and the line locator follows the next
# unit then. Fewer left (or no window: a process traced to its exit, which may
# come at any unit), the worker waits, so that the line is located in time.
UNITS_TO_DESCRIBE = 10
# Seconds an exiting process waits for the copy still describing its window.
WINDOW_COPY_WAIT = 15.0


_T = TypeVar("_T")


class Phase(Protocol):
    """One way of measuring loops; the Collector hands every loop to the current one."""

    def begin(self) -> None:
        """The phase becomes current (again): start what it needs, say so to the observer."""

    def record(self, index: int, seconds: float) -> Phase | None:
        """Record loop ``index`` (the worker spent ``seconds`` in it).

        Returns the phase for the next loop: ``self``, the next phase (the
        Collector calls its ``begin()``), or None when the run has all the
        loops it wants.
        """


class TraceWindow:
    """What the traced loops share: the last diff's totals and leakscope's own share.

    Held by the Collector, because its end-of-run steps (the final
    collection, the holder walks, the back-reference search) read it too.
    """

    __slots__ = ("allocated_at_diff", "blocks_base", "last_traced", "native_offset",
                 "own_bytes", "previous", "start", "trace_overhead")

    def __init__(self) -> None:
        self.previous = self.start = sites.LineTotals()
        # The traced total of the last loop between two diffs (None after a diff).
        self.last_traced: int | None = None
        # Leakscope's own bytes in the traced heap, and the interpreter's
        # allocated blocks at the last diff (moved by leakscope's own blocks).
        self.own_bytes = 0
        self.blocks_base = 0
        self.allocated_at_diff = 0
        # What a holder walk between two diffs moved the native estimate by
        # (leakscope's own large blocks): taken off until the next diff.
        self.native_offset = 0
        # Malloc bytes tracemalloc spends per trace beyond what it reports.
        self.trace_overhead = 0.0


# ------------------------------------------------------------------ warm-up


class WarmupPhase:
    """Untraced loops until the worker's start-up growth is over: a fixed count or "auto"."""

    def __init__(self, engine: Collector, target: int | None, following: Phase) -> None:
        self.engine = engine
        self.target = target  # None: auto, until block growth is steady
        self.following = following
        self.blocks_history: list[int] = []

    def begin(self) -> None:
        pass

    def finished(self) -> bool:
        if self.target is not None:
            return self.engine.index >= self.target
        return self.settled()

    def settled(self) -> bool:
        """Warm-up has settled when per-loop block growth has stopped changing.

        A steady rate, zero or not, is what the measured window must see: a
        leak grows steadily from the start, while warm-up growth (imports,
        first-call caches) dies away.
        """
        index = self.engine.index
        if index >= AUTO_WARMUP_MAX:
            return True
        history = self.blocks_history
        if index < AUTO_WARMUP_MIN or len(history) < AUTO_WARMUP_STEADY + 1:
            return False
        recent = history[-(AUTO_WARMUP_STEADY + 1):]
        deltas = [b - a for a, b in zip(recent, recent[1:])]
        spread = max(deltas) - min(deltas)
        return spread <= max(2, 0.1 * abs(sorted(deltas)[len(deltas) // 2]))

    def record(self, index: int, seconds: float) -> Phase | None:
        engine = self.engine
        blocks = sys.getallocatedblocks()
        self.blocks_history.append(blocks)
        loop = {
            "index": index,
            "warmup": True,
            "phase": "warmup",
            "rss_bytes": counters.rss_bytes(),
            "allocated_blocks": blocks,
            "native_bytes": counters.malloc_in_use(),
            "gc_collections": engine.gc_counter.collections,
            "seconds": seconds,
        }
        engine.observer.on_loop(loop, [])
        if self.finished():
            engine.start_measuring()
            return self.following
        return self


# ------------------------------------------------------- traced loops (full)


class TracedPhase:
    """Every loop traced: its totals in O(1), its per-line diff when the schedule says.

    Full mode traces all ``target`` measured loops with holder walks at
    ``checkpoints`` (traced-loop counts); ``target`` None is open-ended (a
    real worker's units). ``name`` is the loop records' "phase".
    """

    name = "measure"

    def __init__(self, engine: Collector, target: int | None, checkpoints: Container[int]) -> None:
        self.engine = engine
        self.target = target
        self.checkpoints = checkpoints

    def begin(self) -> None:
        engine = self.engine
        if self.target is not None and self.name == "measure" and memray_may_locate(engine):
            # Full mode: the native series is kept, so that a native verdict's
            # site can be located after the last loop (native_window).
            engine.observer = NativeSeries(engine.observer, self.target)
        engine.start_tracing()
        engine.observer.on_measuring(engine.warmup_loops)
        self.first_checkpoint()

    def first_checkpoint(self) -> None:
        if self.engine.holder_probe is not None and 0 in self.checkpoints:
            self.checkpoint()

    def checkpoint(self, final: bool = False) -> None:
        """A holder walk. What it leaves in the traced heap (and in malloc) is
        leakscope's own: added to what the O(1) totals of the loops up to the next
        diff take off, as a diff right after the walk used to measure, at the cost
        of a full read of the traces."""
        self.own_work(lambda: self.engine.checkpoint(final, self.engine.window.last_traced))

    def own_work(self, work: Callable[[], _T]) -> _T:
        """``work()``, whatever it leaves in the traced heap, the allocated blocks and
        malloc counted as leakscope's own until the next diff."""
        window = self.engine.window
        raw = tracemalloc.get_traced_memory()[0]
        allocated = sys.getallocatedblocks()
        native = self.native_between_diffs(allocated, counters.malloc_in_use())
        result = work()
        window.own_bytes += tracemalloc.get_traced_memory()[0] - raw
        after = sys.getallocatedblocks()
        window.blocks_base += after - allocated
        if native is not None:
            moved = self.native_between_diffs(after, counters.malloc_in_use())
            window.native_offset += (moved or 0) - native
        return result

    def native_between_diffs(self, allocated: int, malloc: int | None) -> int | None:
        """malloc's in-use bytes (``malloc``, None without the counter) beyond the last
        diff's Python large blocks and tracemalloc's bookkeeping (every trace, the new
        ones too): the native estimate."""
        if malloc is None:
            return None
        window = self.engine.window
        previous = window.previous
        all_blocks = previous.all_blocks + allocated - window.allocated_at_diff
        return int(
            malloc - previous.malloc_bytes - tracemalloc.get_tracemalloc_memory()
            - window.trace_overhead * all_blocks
        )

    def record(self, index: int, seconds: float) -> Phase | None:
        engine = self.engine
        engine.count_threads()
        self.record_traced(index, seconds)
        if self.target is None or engine.traced < self.target:
            return self
        probe = engine.holder_probe
        # The frame of end_loop's caller (this method <- end_loop <- caller):
        # the locator follows the worker's next loop from there.
        if probe is not None and probe.start_locating(sys._getframe(2)):
            return HolderLocatorPhase(engine)
        # Observe now, while the worker's frames and a tick script's globals
        # are still alive: StopTracing is about to unwind them.
        engine.observe_end()
        return native_window(engine)

    def record_traced(self, index: int, seconds: float) -> None:
        """One traced loop: totals and counters; per-line diff when due; holders at checkpoints."""
        engine = self.engine
        engine.diffs.observe(seconds)
        if not self.diff_due():
            self.record_totals(index, seconds)
        else:
            self.record_diffed(index, seconds)
        last = engine.traced == self.target
        if last:
            engine.close_memray_window()
            engine.gathered()
            engine.observe_end()
        if engine.holder_probe is not None and engine.traced in self.checkpoints:
            self.checkpoint(final=last)
        if last:
            engine.backref_fallback()

    def diff_due(self) -> bool:
        """The schedule's turn, the last traced loop, or a holder checkpoint's loop or the next.

        A checkpoint reads the diffed total; the loop after it is diffed
        because the walk moved leakscope's own bytes in the traced heap.
        """
        engine = self.engine
        if engine.diffs.due() or engine.traced + 1 == self.target:
            return True
        # A real worker's threads allocate during the walk too: there the
        # walk's own share is measured by diffs around it instead.
        return engine.other_threads_allocate and (
            engine.traced + 1 in self.checkpoints or engine.traced in self.checkpoints)

    def record_diffed(self, index: int, seconds: float) -> None:
        """The per-line diff since the last one, exact over every loop it spans."""
        engine = self.engine
        window = engine.window
        started = time.perf_counter()
        totals = engine.line_totals(last=engine.traced + 1 == self.target)
        changes = sites.diff(window.previous, totals)
        # What an observer in this process keeps of the loop (its record, and
        # the values in it) is leakscope's, but not in the traces just taken.
        before = tracemalloc.get_traced_memory()[0]
        both = counters.malloc_read()
        malloc, heap = both if both is not None else (None, None)
        native = None
        if malloc is not None:
            # What the C allocator holds beyond Python's own large blocks and
            # tracemalloc's bookkeeping: memory only a C extension can own.
            native = int(
                malloc - totals.malloc_bytes - tracemalloc.get_tracemalloc_memory()
                - window.trace_overhead * totals.all_blocks
            )
        previous = (window.previous.total_bytes if window.last_traced is None
                    else window.last_traced)
        loop = {
            "index": index,
            "warmup": False,
            "phase": self.name,
            "traced_bytes": totals.total_bytes,
            "traced_blocks": totals.total_blocks,
            "net_bytes": totals.total_bytes - previous,
            "rss_bytes": counters.rss_bytes(),
            "malloc_bytes": malloc,
            "malloc_heap_bytes": heap,
            "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory(),
            "native_bytes": native,
            "allocated_blocks": sys.getallocatedblocks(),
            "gc_collections": engine.gc_counter.collections,
            "seconds": seconds,
            "harness_seconds": round(engine.harness_seconds, 6),
        }
        if engine.diffs.skipped:
            loop["span_from"] = index - engine.diffs.skipped
        window.previous = totals
        window.last_traced = None
        window.native_offset = 0
        engine.measured += 1
        engine.traced += 1
        engine.observer.on_loop(loop, changes)
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
        if engine.other_threads_allocate:
            window.own_bytes = min(after, totals.other_bytes + kept)
        else:
            window.own_bytes = after
        window.blocks_base = window.allocated_at_diff = sys.getallocatedblocks()
        engine.diffs.diffed(time.perf_counter() - started, engine.traced, totals.all_blocks)

    def record_totals(self, index: int, seconds: float) -> None:
        """A loop between two diffs: traced bytes and blocks in O(1), counters, no lines.

        The traced bytes are tracemalloc's running total less leakscope's
        own; the traced blocks, the last diff's count moved by the change in
        the interpreter's allocated blocks since. The line changes of these
        loops arrive summed in the next diff, which names where its span began.
        """
        engine = self.engine
        window = engine.window
        raw = tracemalloc.get_traced_memory()[0]
        allocated = sys.getallocatedblocks()
        engine.observer.on_loop(self.totals_record(index, seconds, raw, allocated), [])
        # An observer in this process (the pytest plugin's) keeps each loop's
        # record, values included: leakscope's own bytes and blocks, not the worker's.
        window.own_bytes += tracemalloc.get_traced_memory()[0] - raw
        window.blocks_base += sys.getallocatedblocks() - allocated

    def totals_record(self, index: int, seconds: float, raw: int, allocated: int
                      ) -> dict[str, Any]:
        """The record of a loop between two diffs, from tracemalloc's running total
        ``raw`` and the interpreter's ``allocated`` blocks (the message is sent from a
        shallower frame: tracemalloc pays for each captured frame's depth in its code)."""
        engine = self.engine
        window = engine.window
        previous_totals = window.previous
        # Never below the last diff: leakscope's own memory drifts between
        # two diffs (objects that the interpreter's free lists hand back and
        # forth keep the trace of whoever made them first), and a loop read
        # low would cut every earlier floor of the rule down to it, while one
        # read high is ignored by the floors; the next diff reads exactly.
        blocks = max(previous_totals.total_blocks,
                     previous_totals.total_blocks + allocated - window.blocks_base)
        traced = max(previous_totals.total_bytes, raw - window.own_bytes)
        previous = (previous_totals.total_bytes if window.last_traced is None
                    else window.last_traced)
        both = counters.malloc_read()
        native = self.native_between_diffs(allocated, both[0] if both is not None else None)
        if native is not None:
            native -= window.native_offset
        loop = {
            "index": index, "warmup": False, "phase": self.name,
            "traced_bytes": traced, "traced_blocks": blocks,
            "net_bytes": traced - previous, "rss_bytes": counters.rss_bytes(),
            "malloc_bytes": both[0] if both is not None else None,
            "malloc_heap_bytes": both[1] if both is not None else None,
            "tracemalloc_bytes": tracemalloc.get_tracemalloc_memory(),
            "native_bytes": native, "allocated_blocks": allocated,
            "gc_collections": engine.gc_counter.collections, "seconds": seconds,
            "harness_seconds": round(engine.harness_seconds, 6),
        }
        window.last_traced = traced
        engine.measured += 1
        engine.traced += 1
        engine.diffs.skip()
        return loop


class HolderLocatorPhase:
    """One more loop after the last traced one, with the line locator on: which
    line grows each holder. It is not a measured loop, so it takes no index."""

    def __init__(self, engine: Collector) -> None:
        self.engine = engine

    def begin(self) -> None:
        pass

    def record(self, index: int, seconds: float) -> Phase | None:
        engine = self.engine
        engine.index -= 1
        assert engine.holder_probe is not None
        engine.holder_probe.stop_locating()
        engine.observe_end()
        return native_window(engine)


class FinishedPhase:
    """After the run's last loop: a tick that still arrives records nothing."""

    def begin(self) -> None:
        pass

    def record(self, index: int, seconds: float) -> Phase | None:
        return None


# ------------------------------------------------------------ fast mode


class DetectPhase:
    """Fast mode: every measured loop untraced, a handful of reads whose cost does not
    grow with the heap; the decision rule on them after the last, and tracing only if
    they grew."""

    def __init__(self, engine: Collector, iterations: int) -> None:
        self.engine = engine
        self.iterations = iterations
        # Preallocated: appending a float per loop would itself show up as
        # one more allocated block per loop in the counter we are reading.
        size = 8 * iterations
        self.blocks = array("d", bytes(size))
        self.malloc = array("d", bytes(size))
        # RSS beyond malloc's heap: memory mapped outside malloc (the RSS rule).
        self.outside = array("d", bytes(size))

    def begin(self) -> None:
        self.engine.observer.on_measuring(self.engine.warmup_loops)

    def record(self, index: int, seconds: float) -> Phase | None:
        engine = self.engine
        engine.count_threads()
        blocks = sys.getallocatedblocks()
        both = counters.malloc_read()
        malloc, heap = both if both is not None else (None, None)
        rss = counters.rss_bytes()
        self.blocks[engine.measured] = blocks
        self.malloc[engine.measured] = malloc or 0
        self.outside[engine.measured] = rss - (heap or 0)
        loop = {
            "index": index,
            "warmup": False,
            "phase": "detect",
            "rss_bytes": rss,
            "malloc_bytes": malloc,
            "malloc_heap_bytes": heap,
            "allocated_blocks": blocks,
            "gc_collections": engine.gc_counter.collections,
            "seconds": seconds,
        }
        engine.measured += 1
        engine.observer.on_loop(loop, [])
        if engine.measured < self.iterations:
            return self
        if self.growth_detected():
            return LocatePhase(engine, engine.settings.locate_loops)
        engine.gathered()
        engine.observe_end()
        return None

    def growth_detected(self) -> bool:
        """The full mode's rule, on allocated blocks, malloc's in-use bytes and RSS.

        Small Python objects show in the block count, large ones and C
        allocations in malloc's counter, memory mapped outside malloc in RSS
        beyond malloc's heap; any rising is worth locating.
        """
        from leakscope.analysis.stats import ratchet

        blocks = ratchet(list(self.blocks))
        grew = blocks.leak
        malloc = outside = None
        if counters.has_malloc_counter():
            malloc = ratchet(list(self.malloc))
            grew = grew or malloc.leak
            # Memory mapped outside malloc shows in RSS only: the same rule on
            # its page floor, so that the locate loops (memray) look for it.
            from leakscope.analysis.rules import RSS_MIN_RATE
            from leakscope.analysis.stats import page_ratchet

            outside = page_ratchet(list(self.outside))
            grew = grew or (outside.leak and outside.slope >= RSS_MIN_RATE)
        self.engine.detection = {
            "blocks_p_value": blocks.p_value, "blocks_rate": round(blocks.slope, 3),
            "malloc_p_value": malloc.p_value if malloc else None,
            "malloc_rate": round(malloc.slope, 1) if malloc else None,
            "growth": grew,
        }
        if outside is not None:
            self.engine.detection["rss_outside_malloc_rate"] = round(outside.slope, 1)
        return grew


class FreeListDrain:
    """The interpreter's dict and list free lists held empty over a few traced loops.

    A dict or list the worker makes comes from its free list, if that holds
    one, without a new allocation: tracemalloc records nothing, and the block
    stays under the line that first made it. leakscope's own work between
    fast mode's few locate loops (the holder walks' results) frees dicts and
    lists onto those lists (80 each), so a worker that keeps a dict a loop
    showed no traced growth for several of its 6 locate loops and the kind
    came out undecided. Held here (leakscope's own allocations, left out of
    every diff), the lists are empty when each loop starts.
    """

    HELD = 100  # more than CPython keeps on either list

    def __init__(self) -> None:
        self.held: tuple[list[dict[str, Any]], list[list[Any]]] | None = None

    def drain(self) -> None:
        self.held = None  # first back onto the lists, then all taken again
        self.held = ([{} for _ in range(self.HELD)], [[] for _ in range(self.HELD)])

    def release(self) -> None:
        self.held = None


class LocatePhase(TracedPhase):
    """Growth seen: trace a few loops to find where it comes from.

    Three holder checkpoints (start, middle, end) are enough to see a
    container grow at every one of them over so few loops, and each walk
    here runs under tracemalloc, so fewer is cheaper.
    """

    name = "locate"

    def __init__(self, engine: Collector, loops: int) -> None:
        target = max(2, loops)
        super().__init__(engine, target, {0, target // 2, target})
        self.drained = FreeListDrain()

    def record(self, index: int, seconds: float) -> Phase | None:
        following = super().record(index, seconds)
        if following is self:
            # After this loop's walk: the next loop starts with the lists empty.
            self.own_work(self.drained.drain)
        else:
            self.drained.release()
        return following

    def begin(self) -> None:
        engine = self.engine
        engine.observer.on_phase("locate", engine.detection)
        window = prepare_memray_window(engine)
        # With memray recording Python's allocators beside it, tracemalloc could
        # keep a few frames only: its cost grows with the depth (the JSON
        # churner: 15x untraced at 3 frames, 26x at 10), and memray's full
        # Python stacks would give the user's line of a deeper allocation
        # (native_sites.Capture.deep). Off for now: see PYTHON_ALLOCATORS.
        frames = None
        if window is not None and window.deep_stacks:
            frames = min(engine.settings.frames, LOCATE_FRAMES_WITH_MEMRAY)
        engine.start_tracing(frames)
        self.first_checkpoint()
        open_memray_window(engine, window)
        self.own_work(self.drained.drain)


def memray_may_locate(engine: Collector) -> bool:
    """Whether this run asked for memray windows (the parent made a capture directory)."""
    settings = engine.settings
    return settings.locator != "tracemalloc" and bool(settings.capture_dir)


def prepare_memray_window(engine: Collector, beside_tracemalloc: bool = True) -> Any:
    """memray over a window of traced loops too, when it is the locator: native sites.

    Fast mode's locate loops and a real worker's traced window use it.
    Called before tracemalloc starts, and ``open_memray_window`` after it and
    the first holder walk, so that none of them (memray's own imports
    included) is in either capture; a worker that runs its own Tracker keeps
    it, and the run locates with tracemalloc alone (``engine.locator``'s note
    says so). None when the window will not open.
    """
    settings = engine.settings
    if not memray_may_locate(engine):
        return None
    from leakscope.measure.memray_window import MIN_FRAMES, MemrayWindow

    if beside_tracemalloc and settings.frames < MIN_FRAMES:
        engine.locator = {"engine": "tracemalloc", "note": (
            f"the memray locator needs --frames {MIN_FRAMES} or more; "
            "located with tracemalloc")}
        return None

    window = MemrayWindow(settings.capture_dir)
    if window.prepare():
        return window
    engine.locator = {"engine": "tracemalloc", "note": window.note}
    return None


def open_memray_window(engine: Collector, window: Any) -> None:
    """Start the window ``prepare_memray_window`` made (if any); closed by
    ``engine.close_memray_window()`` after the window's last loop."""
    if window is None:
        return
    if window.open():
        engine.memray = window
    else:
        engine.locator = {"engine": "tracemalloc", "note": window.note}


# --------------------------------------------- full mode's native window


class NativeSeries:
    """The observer of a full-mode run, passed through, with each measured loop's native
    and traced bytes kept: what ``native_window`` decides on after the last loop.

    Preallocated arrays, as fast mode's series: an append per loop would be a
    block the worker did not allocate.
    """

    def __init__(self, inner: Any, loops: int) -> None:
        self.inner = inner
        self.native = array("d", bytes(8 * loops))
        self.traced = array("d", bytes(8 * loops))
        self.count = 0
        self.complete = True
        # Measured loops after which a holder walk ran (its own malloc moves the series).
        self.walked = array("l", [0]) * MAX_WALKS_KEPT
        self.walks = 0

    def on_loop(self, loop: dict[str, Any], changes: Any) -> None:
        if not loop.get("warmup") and self.count < len(self.native):
            native, traced = loop.get("native_bytes"), loop.get("traced_bytes")
            if native is None or traced is None:
                self.complete = False
            else:
                self.native[self.count] = native
                self.traced[self.count] = traced
            self.count += 1
        self.inner.on_loop(loop, changes)

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        if self.walks < len(self.walked):
            self.walked[self.walks] = self.count
            self.walks += 1
        self.inner.on_checkpoint(loops_done, observation)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def native_grows(self) -> dict[str, float] | None:
        """The full-mode rule's native branch, on the series so far: the native series
        rises (the holder walks' own steps taken out) and the traced one does not.
        Its rate and p-value, or None."""
        from leakscope.analysis.rules import NATIVE_MIN_RATE, _without_walk_steps
        from leakscope.analysis.stats import ratchet
        from leakscope.model.runfile import Loop

        if not self.complete or self.count < 3:
            return None
        walked = set(self.walked[:self.walks])
        loops = [Loop(index=i, warmup=False, gc_objects=1 if i + 1 in walked else None)
                 for i in range(self.count)]
        native = _without_walk_steps(list(self.native[:self.count]), loops)
        # Under tracemalloc, holding every trace of the run: the rate only if
        # the native floor rises (a Theil-Sen took 0.5 s there on 2,000 loops).
        evidence = ratchet(native, slope_if_rising=True)
        if not (evidence.leak and evidence.slope >= NATIVE_MIN_RATE):
            return None
        if ratchet(list(self.traced[:self.count]), slope_if_rising=True).leak:
            return None  # Python objects grow: not a native verdict
        return {"native_rate": round(evidence.slope, 1), "native_p_value": evidence.p_value}


# Holder walks a full-mode run makes: one per collector.CHECKPOINTS entry.
MAX_WALKS_KEPT = 8


def native_window(engine: Collector) -> Phase | None:
    """After full mode's last measured loop: a memray window over a few more loops when
    the verdict will be native, so that it names the native function and the user's
    line as fast mode does. None (the run is over) otherwise.

    tracemalloc stops first (``Collector.finish`` would): the run's figures are
    all taken, neither memray's import nor the window's loops may show in them,
    and the rule's imports and arithmetic run at untraced speed (holding every
    trace of a 2,000-loop cycle leak, they took 1.2 s under tracemalloc).
    """
    tap = engine.observer
    if not isinstance(tap, NativeSeries):
        return None
    engine.observer = tap.inner
    if tracemalloc.is_tracing() and not engine.tracemalloc_was_on:
        tracemalloc.stop()
    growth = tap.native_grows()
    if growth is None:
        return None
    open_memray_window(engine, prepare_memray_window(engine, beside_tracemalloc=False))
    if engine.memray is None:
        return None
    return NativeWindowPhase(engine, max(2, engine.settings.locate_loops), growth)


class NativeWindowPhase:
    """Full mode's native window: ``loops`` more loops under memray alone, not measured
    (they take no index), then the run is over."""

    def __init__(self, engine: Collector, loops: int, growth: dict[str, float]) -> None:
        self.engine = engine
        self.loops = loops
        self.growth = growth

    def begin(self) -> None:
        self.engine.observer.on_phase("memray", {"loops": self.loops, **self.growth})

    def record(self, index: int, seconds: float) -> Phase | None:
        engine = self.engine
        engine.index -= 1
        window = engine.memray
        if window is None:
            return None
        window.count_loop()
        if window.counted < self.loops:
            return self
        engine.close_memray_window()
        return None


# ------------------------------------------------------------ real workers


class CheckpointSchedule:
    """Traced-unit counts at which to walk the heap: dense early, then regular.

    Within a traced window of ``window`` units the walks stop short of its
    end: the copy that closes the window walks once more
    (UnitTracedPhase.close_window), so a walk here at the same moment would
    be spent twice.
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


# A watched process's growth seen at N units opens its window at CONFIRM_AFTER
# times N units if the counters rose since at KEPT_PACE of that rate or more.
CONFIRM_AFTER = 2
KEPT_PACE = 0.5


@dataclass(frozen=True)
class Suspicion:
    """Growth the watch rule saw at ``at`` units: the rate per unit of each counter
    that grew (None: that one did not)."""

    at: int
    blocks_rate: float | None
    malloc_rate: float | None


class WatchPhase:
    """A real worker's units, untraced: the counters, and now and then the rule on them,
    until they grow enough to be worth a traced window.

    ``window`` is the phase to go to then (None: a process that ``--sample K``
    did not pick, or whose window is over, watched to the end). The counters
    are read on a CounterSpacing, kept in a bounded WatchSeries, and judged
    on a RuleSchedule (leakscope.measure.watching): what a unit costs does not
    grow with the units watched.
    """

    def __init__(self, engine: Collector) -> None:
        self.engine = engine
        self.window: UnitTracedPhase | None = None
        self.series = WatchSeries()
        self.announced = False
        self.spacing = CounterSpacing()
        self.schedule = RuleSchedule()
        # Growth the rule saw, waiting to be confirmed (growth_confirmed).
        self.suspicion: Suspicion | None = None
        # The forked copy describing the window, until it has exited.
        self.copy: int | None = None

    def announce(self) -> None:
        """Measuring has begun: said once, however often the process comes back here."""
        if not self.announced:
            self.announced = True
            self.engine.observer.on_measuring(self.engine.warmup_loops)

    def begin(self) -> None:
        self.announce()
        if self.window is not None:
            self.prime_the_rule()

    def prime_the_rule(self) -> None:
        """Run the rule once, on both counters' series at their longest, before the
        counters' first read.

        The rule's lists, floats and Theil-Sen slopes are freed into the
        interpreter's free lists (floats, lists, tuples), which keep them: an
        idle worker's count stepped up 28 and 84 blocks at its first two
        checks, which the next check read, in the later half of its series, as
        the worker's growth (with checks every 20 units, more than the half
        block a unit that opens a window). Filled here, before the first read,
        they are part of the baseline: 2 and 6 blocks at those checks.
        """
        kept_series, kept_detection = self.series, self.engine.detection
        primer = WatchSeries()
        primer.blocks.extend(float(i) for i in range(MAX_WATCH_POINTS))
        primer.malloc.extend(64.0 * i for i in range(MAX_WATCH_POINTS))
        self.series = primer
        try:
            self.counters_grow()
        finally:
            self.series, self.engine.detection = kept_series, kept_detection

    def record(self, index: int, seconds: float) -> Phase | None:
        if self.copy is not None:
            self.reap_copy()
        engine = self.engine
        spacing = self.spacing
        fixed = spacing.gap is not None
        due = spacing.read_now()
        if not fixed and spacing.gap is not None and spacing.gap > 1:
            # Spacing begins: the rule's series keeps the points on its grid.
            self.series.keep_every(spacing.gap)
        if due:
            started = time.perf_counter()
            count = sys.getallocatedblocks()
            malloc = counters.malloc_in_use()
            spacing.observe(seconds, time.perf_counter() - started)
            self.series.add(count, malloc)
            blocks: int | None = count
        else:
            blocks = malloc = None
            spacing.observe(seconds, None)
        loop = {
            "index": index, "warmup": False, "phase": "detect",
            "rss_bytes": counters.rss_bytes(), "malloc_bytes": malloc,
            "allocated_blocks": blocks,
            "gc_collections": engine.gc_counter.collections, "seconds": seconds,
        }
        engine.measured += 1
        engine.observer.on_loop(loop, [])
        if self.window is not None and self.schedule.due(engine.measured):
            started = time.perf_counter()
            grows = self.growth_confirmed()
            self.schedule.checked(engine.measured, time.perf_counter() - started,
                                  spacing.unit_seconds)
            if self.suspicion is not None:
                # The confirming check falls at twice the units, whatever the gap.
                self.schedule.due_by(CONFIRM_AFTER * self.suspicion.at)
            if grows:
                return self.window
        return self

    def growth_confirmed(self) -> bool:
        """Whether the window opens now: the rule saw growth at some check (a
        suspicion), and the counters kept that pace over as many units again.

        A framework's own fill can rise as steadily as a leak for a few hundred
        units: of ten clean Celery pool children (their blocks read every task,
        tests/data/celery_clean_blocks.json), the rule alone called four growing
        somewhere between the 100th and 400th task, and a later first check
        only moves the ones it is fooled by (three at 200, two at 400). A
        fill slows down as it fills; a leak keeps its pace. Growth seen at N
        units opens the window at 2N units if the span since N rose at no less
        than KEPT_PACE of the rate seen at N; else the rule starts afresh.
        """
        measured = self.engine.measured
        suspicion = self.suspicion
        if suspicion is not None:
            if measured < CONFIRM_AFTER * suspicion.at:
                return False
            self.suspicion = None
            if self.kept_pace(suspicion):
                return True
        if self.counters_grow():
            detection = self.engine.detection
            self.suspicion = Suspicion(
                measured,
                detection["blocks_rate"] if detection["blocks_growth"] else None,
                detection["malloc_rate"] if detection["native_growth"] else None,
            )
        return False

    def kept_pace(self, suspicion: Suspicion) -> bool:
        """Whether each counter that grew at ``suspicion.at`` rose over the units since
        at KEPT_PACE of that rate at least (and at the rule's least rate)."""
        from leakscope.analysis.rules import NATIVE_MIN_RATE, TRACE_MIN_BLOCKS_RATE
        from leakscope.analysis.stats import ratchet

        series = self.series
        apart = (self.spacing.gap or 1) * series.stride
        points = max(2, round((self.engine.measured - suspicion.at) / apart))
        confirmed: dict[str, float] = {}
        checks = (("blocks", series.blocks, suspicion.blocks_rate, TRACE_MIN_BLOCKS_RATE),
                  ("malloc", series.malloc, suspicion.malloc_rate, NATIVE_MIN_RATE))
        for name, values, rate, least in checks:
            if rate is None or len(values) < points:
                continue
            span = ratchet(list(values[-points:]), slope_if_rising=True)
            pace = span.slope / apart
            if span.leak and pace >= max(least, KEPT_PACE * rate):
                confirmed[name] = round(pace, 3)
        self.engine.detection.update({
            "growth": bool(confirmed), "native_growth": "malloc" in confirmed,
            "suspected_after_units": suspicion.at, "after_units": self.engine.measured,
            "kept_pace": confirmed,
        })
        return bool(confirmed)

    def counters_grow(self) -> bool:
        """The rule on the later half only: a framework's own warm-up (connections,
        first-task imports, caches that fill) is steep early and then dies away,
        while a leak keeps its pace."""
        from leakscope.analysis.rules import NATIVE_MIN_RATE, TRACE_MIN_BLOCKS_RATE
        from leakscope.analysis.stats import ratchet

        # The points are ``gap`` units times ``stride`` reads apart: rates per unit.
        series = self.series
        apart = (self.spacing.gap or 1) * series.stride
        blocks_series = list(series.blocks)
        half = len(blocks_series) // 2
        # The rate (Theil-Sen, the rule's dearest part) only for a rising series.
        blocks = ratchet(blocks_series[half:], slope_if_rising=True)
        blocks.slope /= apart
        grew = (blocks.leak and blocks.slope >= TRACE_MIN_BLOCKS_RATE
                and not _settling(blocks_series))
        malloc = None
        native = False
        if counters.has_malloc_counter() and len(series.malloc) == len(series.blocks):
            malloc_series = list(series.malloc)
            malloc = ratchet(malloc_series[half:], slope_if_rising=True)
            malloc.slope /= apart
            native = (malloc.leak and malloc.slope >= NATIVE_MIN_RATE
                      and not _settling(malloc_series))
        self.engine.detection = {
            "blocks_p_value": blocks.p_value, "blocks_rate": round(blocks.slope, 3),
            "malloc_p_value": malloc.p_value if malloc else None,
            "malloc_rate": round(malloc.slope, 1) if malloc else None,
            "growth": grew or native, "blocks_growth": grew, "native_growth": native,
            "after_units": self.engine.measured,
        }
        return grew or native

    def reap_copy(self, wait: float = 0.0) -> None:
        """Collect the copy's exit status (no zombie); at exit, give it ``wait`` seconds."""
        pid = self.copy
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
            self.copy = None
        elif wait:
            try:
                os.kill(pid, 9)  # stuck (a lock held by another thread at fork)
                os.waitpid(pid, 0)
            except OSError:
                pass
            self.copy = None


class UnitTracedPhase(TracedPhase):
    """A real worker's units traced, open-ended: holders on a schedule, described as
    soon as three walks show them growing, the grower's line located in the next unit.

    With ``watch`` it is a window: it follows that watch phase (or begins at
    once, for a process ``--sample K`` picked), and after ``window_units``
    units it is described by a forked copy while the process goes back to
    watching, for good (tracemalloc never restarts: on CPython 3.11 every
    start/stop cycle leaks malloc memory that the counters would report).
    Without ``watch`` (``--sample 1``) it traces every unit to the exit.
    """

    def __init__(
        self, engine: Collector, observer: UnitObserver, every: int,
        watch: WatchPhase | None = None, window_units: int = 0, picked: bool = False,
    ) -> None:
        super().__init__(engine, None, CheckpointSchedule(every, window_units if watch else 0))
        self.observer = observer
        self.watch = watch
        self.window_units = window_units if watch is not None else 0
        self.picked = picked
        self.name = "locate" if watch is not None else "measure"
        self.closed = False
        self.locator_running = False
        self.described = False
        self.diff_next = False
        self.measuring_since: float | None = None

    @property
    def probe(self) -> HolderProbe | None:
        return self.engine.holder_probe

    def begin(self) -> None:
        engine = self.engine
        if self.watch is None:
            engine.start_tracing()
            engine.observer.on_measuring(engine.warmup_loops)
        else:
            self.watch.announce()
            self.watch.window = None  # one window per process: tracemalloc never restarts
            if self.picked:
                engine.detection = {"picked": True, "after_units": 0}
            engine.observer.on_phase("locate", engine.detection)
            # A window has an end, so memray can locate in it as in fast mode's
            # locate loops (native sites); a process traced for good has none.
            memray = prepare_memray_window(engine) if self.wants_memray() else None
            # Diffs spaced over the window's length (DiffSchedule.horizon).
            engine.diffs.horizon = self.window_units or None
            engine.start_tracing()
            self.first_checkpoint()
            open_memray_window(engine, memray)
            return
        self.first_checkpoint()

    def wants_memray(self) -> bool:
        """Whether this window runs memray beside tracemalloc.

        Asked for (``LEAKSCOPE_LOCATOR=memray``): always. By default ("auto"):
        only when the watch rule saw malloc's bytes grow, the growth memray
        names and tracemalloc cannot. A window opened on Python objects
        alone, or on a ``--sample K`` pick, gains nothing from it and would
        pay its native stacks on every malloc (a Celery pool child's window
        under memray tripled the Celery bench's overhead, BENCHMARKS.md).
        """
        if self.engine.settings.locator != "auto":
            return True
        return bool(self.engine.detection.get("native_growth"))

    def record(self, index: int, seconds: float) -> Phase | None:
        self.engine.count_threads()
        stop_locator = self.locator_running
        self.record_traced(index, seconds)
        probe = self.probe
        if probe is not None and (
            self.own_work(probe.pending_ready)
            # A window's last walk answers by its next-to-last unit (waited for
            # if it must): it may be the third, whose growers the locator
            # follows through the window's last unit.
            or probe.pending and self.window_units
            and self.engine.traced >= self.window_units - 1
        ):
            self.take_walk()
        if probe is not None and probe.describing and (
            self.own_work(probe.describe_ready)
            # Taken by the window's third-to-last unit at the latest: the
            # locator follows the next one, before the window closes.
            or self.engine.traced >= self.window_units - 2
        ):
            self.take_description()
        if stop_locator and probe is not None:
            probe.stop_locating()
            self.locator_running = False
            # Saved at once: a process killed before its final word (a stop
            # that outlasts --stop-timeout) still names the line.
            self.observer.on_holders(probe.snapshot())
        if (
            self.window_units and not self.closed
            and self.engine.traced >= self.window_units and not self.locator_running
        ):
            return self.close_window()
        return self

    def take_walk(self) -> None:
        """The pending walk's lengths in (waiting for its copy if it must), then what
        follows a walk."""
        self.own_work(self.engine.finish_checkpoint)
        # The next unit is diffed: exact again after leakscope's own work here.
        self.diff_next = True
        self.after_walk()

    def diff_due(self) -> bool:
        # The unit the locator ran in: its line changes name the grower's line.
        if self.diff_next:
            self.diff_next = False
            return True
        return self.locator_running or super().diff_due()

    def checkpoint(self, final: bool = False) -> None:
        probe = self.probe
        assert probe is not None
        now = time.perf_counter()
        if self.measuring_since is None:
            self.measuring_since = now
        if (
            not final and probe.checkpoints >= EARLY_WALKS
            and probe.walk_seconds > WALK_BUDGET * (now - self.measuring_since)
        ):
            return  # walks already took their share of this worker's time
        # The walk that can make three, before anything was described, is waited
        # for: its growers are described and located in the next unit, however
        # few units the process has left (a short run would end first), unless
        # a window leaves room for its answers to come later.
        third = not self.described and probe.checkpoints + probe.pending == EARLY_WALKS - 1
        wait = third and not self.room_to_describe()
        if not final and not wait and self.engine.start_checkpoint():
            return  # the copy walks while the worker serves: after_walk once it answers
        self.engine.checkpoint(final)
        self.after_walk(final)

    def room_to_describe(self) -> bool:
        """Whether the window has units enough left for a walk's and a description's
        copies to answer late (UNITS_TO_DESCRIBE)."""
        return bool(self.window_units) and (
            self.window_units - self.engine.traced >= UNITS_TO_DESCRIBE)

    def after_walk(self, final: bool = False) -> None:
        """A checkpoint's lengths are in: describe the growers once three walks show them,
        and save the holders so far."""
        probe = self.probe
        assert probe is not None
        if not final and not self.described and not probe.describing and probe.checkpoints >= 3:
            if self.room_to_describe() and probe.start_describe():
                pass  # the copy describes while the worker serves: take_description
            elif probe.describe_now():
                self.start_locator()
        self.observer.on_holders(probe.snapshot())

    def start_locator(self) -> None:
        """Growth at three checkpoints, described: find the line that grows it during the
        next unit."""
        probe = self.probe
        assert probe is not None
        self.described = True
        # From this frame up: a loop already running in the user's code
        # (a tick script's, a consumer's) gets line events too.
        self.locator_running = probe.start_locating(sys._getframe())

    def take_description(self) -> None:
        """The growers' description is in (waiting for its copy if it must): locate."""
        probe = self.probe
        assert probe is not None
        if self.own_work(probe.finish_describe):
            self.start_locator()
        # The next unit is diffed: exact again after leakscope's own work here.
        self.diff_next = True
        self.observer.on_holders(probe.snapshot())

    def flush_lines(self) -> None:
        """The last units were cheap ones: their lines arrive now, so each line's
        series ends where the tracing ends."""
        engine = self.engine
        window = engine.window
        totals = sites.aggregate(get_traces(), engine.is_own)
        self.observer.on_lines(sites.diff(window.previous, totals))
        window.previous = totals
        window.last_traced = None
        window.native_offset = 0
        engine.diffs.skipped = 0

    def end(self) -> None:
        """The process is exiting inside or after the tracing: what close_window would say."""
        self.engine.close_memray_window()
        if self.engine.diffs.skipped:
            self.flush_lines()
        self.engine.observe_end()
        if self.probe is not None:
            # The final walk describes the growers itself.
            self.probe.drop_describe(reap=True)
            self.checkpoint(final=True)
            self.engine.backref_fallback()

    def close_window(self) -> Phase:
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
        from leakscope.heap.fork import fork_copy

        assert self.watch is not None
        engine = self.engine
        self.closed = True
        # The closing copy must not share a walk's pipe with this process.
        if engine.finish_checkpoint():
            self.after_walk(final=True)
        probe = engine.holder_probe
        if probe is not None and probe.describing:
            # Described for the window's report; too late to locate.
            self.described = probe.finish_describe()
            self.observer.on_holders(probe.snapshot())
        # Stopped here, before the copy forks: the Tracker writes its capture in
        # this process, and the copy only reports where it is (engine.locator).
        engine.close_memray_window()
        if engine.diffs.skipped:
            self.flush_lines()
        copy = fork_copy()
        if copy == 0:
            code = 1
            try:
                self.describe_window(in_copy=True)
                code = 0
            finally:
                os._exit(code)
        if copy is None:
            if not gc.isenabled():
                return self
            self.describe_window()
        self.watch.copy = copy
        if engine.holder_probe is not None:
            engine.holder_probe.stop_locating()
        if not engine.tracemalloc_was_on:
            tracemalloc.stop()
        self.observer.on_phase("detect", {"after_traced_units": engine.traced})
        # The window is over in this process too: what it records at exit
        # (gc_enabled, and the end figures if the worker traces on its own)
        # is read now, as the window closes.
        engine.observe_end()
        return self.watch

    def describe_window(self, in_copy: bool = False) -> None:
        """Tracebacks, the full collection, the last holder walk: sent as one "window" message."""
        engine = self.engine
        engine.observe_end()
        probe = self.probe
        if probe is not None:
            # The last walk needs lengths only (growers were described mid-window,
            # bounded containers are described by id): a copy of this copy walks
            # them with tracemalloc stopped. Walked here, traced, it took ~1.2 s of
            # CPU in a Celery pool child, on the cores the workers share.
            engine.checkpoint(False)
            if not probe.describe_known():
                self.checkpoint(final=True)
            # A copy that is thrown away searches itself, without a copy of its own.
            engine.backref_fallback(in_copy=in_copy)
        self.observer.on_window({
            # The memray window's capture travels with the window's end facts:
            # a process killed before its final word still has its native sites.
            "end": {**(engine.end or {}),
                    **({"locator": engine.locator} if engine.locator else {})},
            "holders": probe.report() if probe is not None else None,
        })


def _settling(series: list[float]) -> bool:
    """Whether the later half grows much slower than the earlier: a warm-up dying away."""
    from leakscope.analysis.policy import SETTLING_RATIO
    from leakscope.analysis.stats import suffix_minima, theil_sen

    half = len(series) // 2
    floor = suffix_minima(series)
    early, late = theil_sen(floor[:half]), theil_sen(floor[half:])
    return early > 0 and late < SETTLING_RATIO * early
