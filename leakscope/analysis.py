"""Loop series to a Verdict: the ratchet rule, the kind, the rate and the projection.

The decision rule
-----------------
A leak is memory whose *floor* keeps rising. For each measured loop we look
at the kept bytes of the traced window, and at its floor: the smallest value
seen from that loop to the end of the run (a suffix minimum). A sawtooth
buffer, a ring buffer or a list cleared every few loops returns to the same
floor again and again; a cache that fills and plateaus stops raising it; a
leak raises it loop after loop.

1. Multi-scale floors. Growth hidden under a periodic buffer (a leak plus a
   list cleared every 5 loops) rises only from one cycle to the next, so the
   floor is also read on block minima of sizes 1, 2, 3, ... 8, 10, ... loops,
   as long as at least ``MIN_BLOCKS`` blocks remain. The series first goes
   through a running median of three, so that a single loop's dip (a big
   object freed and made again, a counter read mid-update) cannot hold the
   floor down for every loop before it.
2. Significance. At each scale we count the steps where the floor rose and
   take the one-sided sign-test p-value against "no growth" (a rise no more
   likely than not: for independent noise a floor rises at step k with
   probability 1/(k+1) <= 1/2, so the test is conservative). The p-value is
   multiplied by the number of scales tried (Bonferroni). A leak needs
   ``p <= ALPHA`` (0.05, the 0.95 Scalene reports at).
3. Persistence. Growth must still be happening at the end of the run: in the
   last half of the steps, at least ``TAIL_RISE_FRACTION`` of them rise.
   Warm-up growth and a cache that has filled fail this, however long the run.
4. Size. The floor's Theil-Sen slope must be positive.

Against CPython's refleak hunter (5 warm-ups, then a leak only if each of 4
deltas is >= 1: p = 1/16 for coin-flip noise, and blind to a leak under a
sawtooth), one object per loop is called after 6 measured loops at p < 0.05,
and periodic buffers are told apart. Against Scalene's Laplace score
((rises + 1) / (steps + 2) >= 0.95 needs 18 straight rises), the sign test
reaches the same confidence after 5.

The kind
--------
- ``reachable``: the traced floor rises and a full collection after the run
  frees less than ``CYCLIC_SHARE`` of the growth.
- ``cyclic-garbage``: a collection frees most of the growth *and* the normal
  gc was disabled during the run (seed 000's worker). With gc enabled the
  same garbage is freed by the collector's own schedule, so it is no leak.
- ``native``: the traced floor is flat but memory outside the Python heap
  (glibc's in-use bytes beyond Python's own large blocks, or RSS where glibc
  is absent) passes the same rule with at least ``NATIVE_MIN_RATE`` a loop.

What the rule cannot tell, and what it sets apart
-------------------------------------------------
- Undecided: a rising floor over a short run that nothing ties to the
  worker's own code may be someone else's warm-up. Framework-only growth in
  a real worker (``FRAMEWORK_HORIZON``), a watched worker's counters with no
  traced unit, and growth while other threads ran with no growing container
  (``THREADED_HORIZON``) are "Undecided", with confidence 0 and the number
  of loops or units that would decide; never a leak at confidence 1.00.
- Filling: a bounded container still filling (an ``lru_cache`` below its
  maxsize) beside a leak is no part of it. The lines that made its newest
  entries are marked ``filling``: left out of the rate, never growing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from leakscope.runfile import Holder, Loop, Run, Site, Verdict
from leakscope.sites import is_user_file
from leakscope.units import format_bytes, format_count, short_unit

ALPHA = 0.05
MIN_LOOPS = 5
MIN_BLOCKS = 5
SCALES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 96, 128)
TAIL_RISE_FRACTION = 0.75
MIN_TAIL_STEPS = 3
# Share of the window's growth that one gc.collect() must free to call it cyclic.
CYCLIC_SHARE = 0.5
# Reachable growth below this rate, once cycles and free-list residue are set
# aside, is not a leak: interned names and small caches settle at this scale.
MIN_KEPT_RATE = 4.0
# Native counters see malloc noise from the interpreter itself (a few hundred
# bytes of free-list churn); below this rate a rising floor is not a leak.
NATIVE_MIN_RATE = 64.0
# In-process runs (the pytest plugin) keep their own loop records in the
# traced process; the small error in the per-trace bookkeeping estimate then
# grows with every loop, so they need a higher floor to call native growth.
NATIVE_MIN_RATE_IN_PROCESS = 256.0
# RSS moves in pages; where it is the only native counter, demand a page's worth.
RSS_MIN_RATE = 512.0
# Theil-Sen is O(n^2); longer series are thinned to this many points.
SLOPE_POINTS = 400
# `leakscope run`: growth seen only inside a framework's or library's own code
# (no growing site with a user frame, no growing container made or grown by
# user code) may be the framework warming up: recent-task-id sets, header and
# date caches, connection pools fill over the first hundreds of units and
# then stop. Until a process has measured this many units, such growth is
# reported as undecided, with the units still needed, never as a leak.
FRAMEWORK_HORIZON = 1000
# ... and growth counts as the user's when one of their lines grows at least
# this share of the whole growth.
USER_SHARE = 0.1
# ... unless that line's kept memory fell back by this share of its range
# during the run: memory released in bulk is not kept (see gave_back).
GAVE_BACK_SHARE = 0.25
# `trace`: other threads of the worker (a server it started in `setup()`, a
# pool) allocate on their own schedule while the loop runs, and their buffers
# and per-connection state fill for hundreds of loops: an HTTP server in a
# thread kept ~250 request strings, rising over 50 loops, flat from the 500th.
# Over a short run that rise cannot be told from a leak, so when other threads
# were alive and no growing container was found, the verdict stays undecided
# until this many loops, the horizon of framework-only growth.
THREADED_HORIZON = FRAMEWORK_HORIZON
# A watched worker process (`leakscope run --sample auto`) starts tracing when
# its counters grow this fast (phases.WatchPhase reads these): one small
# object per unit. Malloc growth must reach NATIVE_MIN_RATE.
TRACE_MIN_BLOCKS_RATE = 0.5
# A real worker's container of the user's that grew at this many holder walks
# in a row (the last at the run's end), by at least this many items per unit,
# is a leak even when the bytes dip at the very end (_ever_growing_holder).
HOLDER_MIN_WALKS = 4
HOLDER_MIN_ITEMS = 0.5
# After its traced window, a watched worker's verdict reads the untraced
# units that follow once there are this many (half a detection check's span).
WATCHED_AFTER_MIN = 50
# Framework-only growth whose rate in the second half of the run is below
# this share of the first half's is settling (a bound filling), at any length.
SETTLING_RATIO = 0.5
SERIES_POINTS = 200
# A bounded container that filled during the window (urllib.parse.urlsplit's
# lru_cache at a gunicorn worker's 128th request) takes its tuples and lists
# from the interpreter's free lists, where objects other lines made and freed
# were waiting: those lines grow with the cache and stop when it is full. With
# nothing unbounded growing, the growth before the fill is the filling; this
# many loops after it decide whether anything else grows.
AFTER_FILL_LOOPS = 50
# The fill is the loop where the bound's own lines reach their final bytes,
# within this share of their rise.
FILL_TOLERANCE = 0.02
SITE_LIMIT = 25


@dataclass
class Evidence:
    """What the ratchet rule saw in one series."""

    leak: bool
    p_value: float
    scale: int
    rises: int
    steps: int
    tail_rises: int
    tail_steps: int
    slope: float

    @property
    def confidence(self) -> float:
        if self.leak:
            return round(1.0 - self.p_value, 4)
        if self.tail_steps == 0:
            return 0.0
        # Laplace's rule of succession on the tail: the chance the next step rises.
        return round(1.0 - (self.tail_rises + 1) / (self.tail_steps + 2), 4)


def suffix_minima(values: Sequence[float]) -> list[float]:
    out = list(values)
    for i in range(len(out) - 2, -1, -1):
        if out[i + 1] < out[i]:
            out[i] = out[i + 1]
    return out


def block_minima(values: Sequence[float], size: int) -> list[float]:
    """Minima of consecutive blocks, aligned to the end so the latest loops count."""
    start = len(values) % size
    return [min(values[i:i + size]) for i in range(start, len(values), size)]


def sign_test(rises: int, steps: int) -> float:
    """P(at least ``rises`` of ``steps`` fair coin flips come up heads).

    Summed in log space (``lgamma``) from the ``rises`` term outward, so a
    5,000-loop series costs microseconds instead of big-integer binomials.
    """
    if steps == 0 or rises <= 0:
        return 1.0
    if rises > steps:
        return 0.0
    log_half = steps * math.log(0.5)
    log_n = math.lgamma(steps + 1)
    total = 0.0
    for k in range(rises, steps + 1):
        term = math.exp(log_n - math.lgamma(k + 1) - math.lgamma(steps - k + 1) + log_half)
        total += term
        if term < total * 1e-17 and k > steps / 2:
            break
    return min(1.0, total)


def theil_sen(values: Sequence[float]) -> float:
    """Median of pairwise slopes: a rate that outliers cannot drag."""
    n = len(values)
    if n < 2:
        return 0.0
    if n > SLOPE_POINTS:
        step = n / SLOPE_POINTS
        idx = [int(i * step) for i in range(SLOPE_POINTS)] + [n - 1]
    else:
        idx = list(range(n))
    slopes = sorted(
        (values[j] - values[i]) / (j - i)
        for a, i in enumerate(idx) for j in idx[a + 1:] if j != i
    )
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def median3(values: Sequence[float]) -> list[float]:
    """Running median of three: one loop's spike or dip is noise, not a trend."""
    if len(values) < 3:
        return list(values)
    inner = [sorted(values[i - 1:i + 2])[1] for i in range(1, len(values) - 1)]
    return [values[0], *inner, values[-1]]


def ratchet(values: Sequence[float]) -> Evidence:
    """Apply the decision rule of this module to one series."""
    values = median3(values)
    n = len(values)
    slope = theil_sen(suffix_minima(values)) if n >= 2 else 0.0
    if n < MIN_LOOPS:
        return Evidence(False, 1.0, 1, 0, 0, 0, 0, slope)
    scales = [s for s in SCALES if n // s >= MIN_BLOCKS] or [1]
    best: Evidence | None = None
    fallback: Evidence | None = None
    for scale in scales:
        floor = suffix_minima(block_minima(values, scale))
        rising = [b > a for a, b in zip(floor, floor[1:])]
        steps = len(rising)
        tail_steps = max(MIN_TAIL_STEPS, steps // 2)
        tail = rising[-tail_steps:]
        p_value = min(1.0, sign_test(sum(rising), steps) * len(scales))
        evidence = Evidence(
            leak=False, p_value=p_value, scale=scale, rises=sum(rising), steps=steps,
            tail_rises=sum(tail), tail_steps=len(tail), slope=slope,
        )
        persistent = evidence.tail_rises >= TAIL_RISE_FRACTION * evidence.tail_steps
        if persistent and p_value <= ALPHA and slope > 0:
            evidence.leak = True
            if best is None or p_value < best.p_value:
                best = evidence
        elif fallback is None or scale == 1:
            fallback = evidence
    return best or fallback or Evidence(False, 1.0, 1, 0, 0, 0, 0, slope)


def thin(values: Sequence[float], points: int = SERIES_POINTS) -> list[float]:
    if len(values) <= points:
        return list(values)
    step = len(values) / points
    return [values[int(i * step)] for i in range(points - 1)] + [values[-1]]


# ----------------------------------------------------------------- the verdict


def _series(loops: Sequence[Loop], name: str) -> list[float] | None:
    values = [getattr(loop, name) for loop in loops]
    if not values or any(v is None for v in values):
        return None
    return [float(v) for v in values]


def _native_series(run: Run, loops: Sequence[Loop]) -> tuple[list[float] | None, float]:
    native = _series(loops, "native_bytes")
    if native is not None:
        in_process = run.observations.get("in_process")
        native = _without_walk_steps(native, loops)
        return native, NATIVE_MIN_RATE_IN_PROCESS if in_process else NATIVE_MIN_RATE
    rss = _series(loops, "rss_bytes")
    if rss is None:
        return None, RSS_MIN_RATE
    overhead = [float(getattr(loop, "tracemalloc_bytes", 0) or 0) for loop in loops]
    return [r - o for r, o in zip(rss, overhead)], RSS_MIN_RATE


def _without_walk_steps(native: list[float], loops: Sequence[Loop]) -> list[float]:
    """The native series with the change across each holder walk replaced.

    A walk (a loop with ``gc_objects``, read at the checkpoint after it) runs
    leakscope's own code under tracemalloc, which malloc's a traceback record
    for every new stack it sees there and leaves it out of its reported
    memory: a step of several KB in the next loop's estimate, not the
    worker's. That loop's change becomes the median change of the others,
    so a steady leak keeps its rate.
    """
    walked = {i for i in range(1, len(native)) if loops[i - 1].gc_objects is not None}
    if not walked:
        return native
    steps = [native[i] - native[i - 1] for i in range(1, len(native)) if i not in walked]
    typical = sorted(steps)[len(steps) // 2] if steps else 0.0
    kept = [native[0]]
    for i in range(1, len(native)):
        kept.append(kept[-1] + (typical if i in walked else native[i] - native[i - 1]))
    return kept


def _fate_from_totals(run: Run, final: dict, loops: int) -> dict[str, float]:
    """The same reading on the window's totals, for runs without per-line figures."""
    traced = _series(run.measured, "traced_bytes") or []
    if len(traced) < 2:
        return {}
    floor = suffix_minima(traced)
    total = floor[-1] - floor[0]
    if total <= 0:
        return {}
    before = final.get("bytes_before", floor[-1])
    after = final.get("bytes_after", before)
    gone = min(total, max(0.0, floor[-1] - before))
    freed = min(total - gone, max(0.0, before - after))
    kept = total - gone - freed
    # Totals cannot tell a leaking line from a churning one: when most of the
    # growth went, call the whole of it gone (CYCLIC_SHARE).
    rate = 0.0 if gone + freed >= CYCLIC_SHARE * total else kept / max(1, loops - 1)
    return {"total": total, "kept": kept, "gone": gone, "freed": freed, "kept_rate": rate}


def _fate_of_growth(run: Run, loops: int) -> dict[str, float]:
    """What became of each growing line's gain: kept, gone before the end, or freed.

    Read line by line from the final observation. ``gone``: by the end of the
    run, before our collection, the line had lost half its gain (the worker
    or the normal gc released it). ``freed``: the one full collection after
    the run released half of it (unreachable cycles, or blocks parked in the
    interpreter's free lists, which a full collection empties). ``kept``:
    the rest, the reachable growth. Line by line because a busy worker's free
    lists belong to lines that did not leak, and can dwarf a small leak in
    the totals. Empty when no per-line figures were recorded.
    """
    final = run.observations.get("gc_final")
    if not final:
        return {}
    if "kept_by_line" not in final:
        return _fate_from_totals(run, final, loops)
    kept_at_end = {(f, n): b for f, n, b in final["kept_by_line"]}
    freed = {(f, n): b for f, n, b, _ in final.get("freed_by_line", [])}
    fate = {"total": 0.0, "kept": 0.0, "gone": 0.0, "freed": 0.0, "kept_rate": 0.0}
    rising = False
    for site in run.sites:
        if len(site.series) < 2 or site.filling:
            continue
        floor = suffix_minima(site.series)
        gain = floor[-1] - floor[0]
        if gain <= 0:
            continue
        key = (site.file, site.line)
        fate["total"] += gain
        if key in kept_at_end and floor[-1] - kept_at_end[key] >= gain / 2:
            fate["gone"] += gain
        elif freed.get(key, 0) >= gain / 2:
            fate["freed"] += gain
        else:
            fate["kept"] += gain
            quarter = max(1, len(floor) // 4)
            rising = rising or floor[-1] > floor[-quarter - 1]
    if fate["total"] <= 0:
        return {}
    fate["kept_rate"] = fate["kept"] / max(1, loops - 1) if rising else 0.0
    return fate


def mark_filling_sites(run: Run) -> list[Site]:
    """Mark the sites whose kept memory a bounded container holds.

    The holder walk names the lines that made a bound's newest entries (an
    lru_cache's keys, results and links). Those lines grow like a leak while
    the bound fills, and while a full one replaces entries made before
    tracing began with traced ones; so they are set apart: out of the rate,
    never growing. A line that also made or grew a growing container
    stays in: the leak and the cache share it, and the leak is what counts.
    """
    lines = {
        (str(f), int(n)) for bound in run.bounded if bound.get("items")
        for f, n in bound.get("lines_made", [])
    }
    held: set[tuple[str, int]] = set()
    for holder in run.holders:
        if holder.growing:
            for text in holder.items_made_at + ([holder.grown_at] if holder.grown_at else []):
                filename, _, number = text.rpartition(":")
                if number.isdigit():
                    held.add((filename, int(number)))
    for site in run.sites:
        site.filling = (site.file, site.line) in lines - held
    return [site for site in run.sites if site.filling]


def _filling_series(run: Run, length: int) -> list[float] | None:
    """Bytes the filling sites kept after each loop, when their series cover the loops."""
    filling = [site for site in run.sites if site.filling]
    if not filling or any(len(site.series) != length for site in filling):
        return None
    return [float(sum(values)) for values in zip(*(site.series for site in filling))]


def decide(run: Run) -> Verdict:
    """The verdict of a run, from its measured loops and final observations."""
    mark_filling_sites(run)
    if run.mode == "fast":
        return _decide_fast(run)
    return _decide_traced(run, run.measured)


def _decide_fast(run: Run) -> Verdict:
    """Fast mode: the same rule on cheap counters; the locate loops give the kind.

    Growth is decided on the untraced loops' allocated blocks (small Python
    objects) and malloc's in-use bytes (large objects and C memory). When
    either grows, the few traced locate loops say whether Python objects
    grow (reachable, or cyclic garbage by the final collection) or not
    (native), and give the byte rate.
    """
    detect = [loop for loop in run.loops if loop.phase == "detect"]
    located = [loop for loop in run.loops if loop.phase == "locate"]
    partial = bool(run.observations.get("interrupted"))
    if run.process is not None:
        detect = _watched_segment(run.loops)
        if len(detect) < MIN_LOOPS and len(located) >= MIN_LOOPS:
            # Picked by --sample K and ended within its traced window.
            return _decide_traced(run, located)
    blocks = [float(loop.allocated_blocks or 0) for loop in detect]
    malloc = [float(loop.malloc_bytes) for loop in detect if loop.malloc_bytes is not None]
    if len(blocks) < MIN_LOOPS:
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=0.0, partial=partial, evidence={"measured_loops": len(blocks)},
            summary=f"Too few measured loops to decide ({len(blocks)}; at least {MIN_LOOPS}).",
        )
    block_evidence = ratchet(blocks)
    malloc_evidence = ratchet(malloc) if len(malloc) == len(blocks) else None
    # Any significant rise is worth locating; only a native verdict needs the
    # malloc rate to clear the noise floor (NATIVE_MIN_RATE).
    malloc_grows = bool(malloc_evidence and malloc_evidence.leak)
    facts = {
        "measured_loops": len(blocks), "locate_loops": len(located),
        "blocks_p_value": block_evidence.p_value, "blocks_rate": round(block_evidence.slope, 3),
        "malloc_p_value": malloc_evidence.p_value if malloc_evidence else None,
        "malloc_rate": round(malloc_evidence.slope, 1) if malloc_evidence else None,
    }
    if run.process is not None:
        # `leakscope run` watched this process: growth under the rates that
        # start tracing (worker_collector) is not traced, so it is not called.
        block_evidence.leak = block_evidence.leak and block_evidence.slope >= TRACE_MIN_BLOCKS_RATE
        malloc_grows = malloc_grows and malloc_evidence is not None and (
            malloc_evidence.slope >= NATIVE_MIN_RATE)
        if (block_evidence.leak or malloc_grows) and len(located) < 2:
            return _counters_verdict(block_evidence, malloc_evidence, malloc_grows, facts,
                                     partial)
    if (block_evidence.leak or malloc_grows) and len(located) < 2 and _ended(run):
        # The run ended (the worker died, Ctrl-C) before its locate loops.
        return _counters_verdict(block_evidence, malloc_evidence, malloc_grows, facts, True)
    if not (block_evidence.leak or malloc_grows):
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0,
            blocks_per_iteration=round(max(block_evidence.slope, 0.0), 2),
            confidence=block_evidence.confidence, partial=partial, evidence=facts, summary="",
        )
    strongest = min(
        [e for e in (block_evidence, malloc_evidence) if e is not None and e.leak],
        key=lambda e: e.p_value,
    )
    traced = _decide_traced(run, located, require_significance=False)
    released = traced.evidence.get("growth_kept_rate")
    traced.evidence = {**facts, **{f"locate_{k}": v for k, v in traced.evidence.items()}}
    if (not traced.leak and released is not None and released < MIN_KEPT_RATE
            and not block_evidence.leak and malloc_evidence is not None
            and malloc_evidence.leak and malloc_evidence.slope >= NATIVE_MIN_RATE):
        # The locate loops' traced rise was all released (free lists, or
        # leakscope's own bytes a short traceback could not tell apart), while
        # malloc grew and Python's blocks did not: the growth is native.
        traced = replace(traced, summary="")
    if (traced.leak and traced.kind != "native") or traced.summary:
        # Reachable, cyclic garbage, or a filling bound: the traced loops tell.
        if traced.leak:
            traced.confidence = strongest.confidence
        return traced
    if malloc_grows and malloc_evidence is not None and malloc_evidence.slope >= NATIVE_MIN_RATE:
        return Verdict(
            leak=True, kind="native", bytes_per_iteration=round(malloc_evidence.slope, 1),
            blocks_per_iteration=0.0, confidence=malloc_evidence.confidence,
            partial=partial, evidence=facts, summary="",
        )
    if not block_evidence.leak:
        # Only malloc rose, too slowly to be native, and the traced loops saw nothing.
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=malloc_evidence.confidence if malloc_evidence else 0.0,
            partial=partial, evidence=facts, summary="",
        )
    return Verdict(
        leak=True, kind="reachable", bytes_per_iteration=0.0,
        blocks_per_iteration=round(block_evidence.slope, 2),
        confidence=block_evidence.confidence, partial=partial, evidence=facts,
        summary="",
    )


def _watched_segment(loops: Sequence[Loop]) -> list[Loop]:
    """A watched worker's untraced units on one side of its traced window.

    tracemalloc's own tables sit in malloc's counter while it traces and
    leave it when it stops, a step that is not the worker's: the rule reads
    one side only. The units after the window say what the worker does now,
    once there are enough of them; until then, the ones that started the
    tracing.
    """
    phases = [loop.phase for loop in loops]
    if "locate" not in phases:
        return [loop for loop in loops if loop.phase == "detect"]
    first = phases.index("locate")
    last = len(phases) - 1 - phases[::-1].index("locate")
    before = [loop for loop in loops[:first] if loop.phase == "detect"]
    after = [loop for loop in loops[last + 1:] if loop.phase == "detect"]
    return after if len(after) >= WATCHED_AFTER_MIN or len(after) > len(before) else before


def _counters_verdict(
    blocks: Evidence, malloc: Evidence | None, malloc_grows: bool, facts: dict[str, Any],
    partial: bool,
) -> Verdict:
    """A watched process that grew but was not traced (--sample K left it out, or it
    ended before tracing had seen two units): the counters' verdict, with no lines."""
    facts = {**facts, "untraced": True}
    if blocks.leak:
        rate = malloc.slope if malloc is not None and malloc.slope > 0 else 0.0
        return Verdict(
            leak=True, kind="reachable", bytes_per_iteration=round(rate, 1),
            blocks_per_iteration=round(blocks.slope, 2), confidence=blocks.confidence,
            partial=partial, evidence=facts, summary="",
        )
    assert malloc is not None
    return Verdict(
        leak=True, kind="native", bytes_per_iteration=round(malloc.slope, 1),
        blocks_per_iteration=0.0, confidence=malloc.confidence, partial=partial,
        evidence=facts, summary="",
    )


def _decide_traced(run: Run, loops: list[Loop], require_significance: bool = True) -> Verdict:
    """The verdict from traced loops (all measured loops in full mode)."""
    traced = _series(loops, "traced_bytes") or []
    blocks = _series(loops, "traced_blocks") or []
    partial = bool(run.observations.get("interrupted"))
    # A bounded cache filling beside a growing container is set apart from
    # the series; with no container growing, its filling is the verdict
    # (_filling_bounds), read on the whole series as before.
    excluded = None if _filling_bounds(run) else _filling_series(run, len(traced))
    if excluded is not None:
        traced = [t - e for t, e in zip(traced, excluded, strict=True)]
    if len(traced) < (MIN_LOOPS if require_significance else 2):
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=0.0, partial=partial,
            summary=f"Too few measured loops to decide ({len(traced)}; at least {MIN_LOOPS}).",
            evidence={"measured_loops": len(traced)},
        )
    evidence = ratchet(traced)
    filled = _bound_filled(run, len(traced)) if evidence.leak and require_significance else None
    if filled is not None:
        bound, at = filled
        later = ratchet(traced[at:])
        if not later.leak and len(traced) - at < AFTER_FILL_LOOPS:
            return _filled_undecided(run, traced, bound, at, evidence, partial)
        if not later.leak:
            evidence = later
    if not require_significance:
        # Fast mode's locate loops: growth is already established by the
        # counters; here it is enough that the traced floor still rises.
        floor = suffix_minima(traced)
        evidence.leak = floor[-1] > floor[0] and evidence.slope > 0
    block_rate = theil_sen(suffix_minima(blocks)) if blocks else 0.0
    facts = {
        "measured_loops": len(traced),
        "p_value": evidence.p_value, "scale": evidence.scale,
        "floor_rises": evidence.rises, "steps": evidence.steps,
        "tail_rises": evidence.tail_rises, "tail_steps": evidence.tail_steps,
        "gc_enabled": run.observations.get("gc_enabled", True),
    }
    unit = run.unit
    if evidence.leak:
        fate = _fate_of_growth(run, len(traced))
        facts.update({f"growth_{k}": round(v, 1) for k, v in fate.items()})
        gc_enabled = run.observations.get("gc_enabled", True)
        collected = (run.observations.get("gc_final") or {}).get("objects_collected", 0)
        rate = round(evidence.slope, 1)
        if fate and fate["kept_rate"] < MIN_KEPT_RATE:
            # Nothing the window gained lasts: say what took it.
            slope = f"{format_bytes(evidence.slope)}/{short_unit(unit)}"
            if fate["freed"] >= fate["gone"] and collected and not gc_enabled:
                return Verdict(
                    leak=True, kind="cyclic-garbage", bytes_per_iteration=rate,
                    blocks_per_iteration=round(block_rate, 2), confidence=evidence.confidence,
                    partial=partial, evidence=facts, summary="",
                )
            if fate["freed"] >= fate["gone"] and collected:
                reason = (f"{slope} of cyclic garbage built up, but the garbage collector is "
                          "enabled and frees it on its own schedule")
            elif fate["freed"] >= fate["gone"]:
                reason = (f"the {slope} rise was freed blocks waiting in the interpreter's free "
                          "lists (bounded); a full collection released them and no object")
            else:
                reason = (f"the {slope} that built up was released again before the run "
                          "ended (by the worker or the collector)")
            return Verdict(
                leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
                confidence=evidence.confidence, partial=partial, evidence=facts,
                summary=f"No leak: {reason}.",
            )
        if fate and fate["kept"] < fate["total"] / 2:
            rate = round(fate["kept_rate"], 1)  # churn's free-list residue left out
        filling = _filling_bounds(run)
        if filling:
            facts["bounded"] = [b["path"] for b in filling]
            return Verdict(
                leak=False, kind="none", bytes_per_iteration=rate,
                blocks_per_iteration=round(block_rate, 2), confidence=evidence.confidence,
                partial=partial, evidence=facts,
                summary=_bounded_summary(filling[0], evidence.slope, len(traced), run.unit),
            )
        return Verdict(
            leak=True, kind="reachable", bytes_per_iteration=rate,
            blocks_per_iteration=round(block_rate, 2), confidence=evidence.confidence,
            partial=partial, evidence=facts, summary="",
        )
    holder = _ever_growing_holder(run) if require_significance else None
    if holder is not None and evidence.slope > 0:
        # The bytes dipped at the end (a worker freeing something else as the
        # run ended), but one of the user's own containers grew at every walk.
        facts["holder_grew_at_every_walk"] = holder.path
        return Verdict(
            leak=True, kind="reachable", bytes_per_iteration=round(evidence.slope, 1),
            blocks_per_iteration=round(block_rate, 2), confidence=1.0 - evidence.p_value
            if evidence.p_value < 1.0 else 0.5, partial=partial, evidence=facts, summary="",
        )
    native, minimum = _native_series(run, loops)
    if native is not None:
        native_evidence = ratchet(native)
        facts["native_p_value"] = native_evidence.p_value
        facts["native_rate"] = round(native_evidence.slope, 1)
        if native_evidence.leak and native_evidence.slope >= minimum:
            return Verdict(
                leak=True, kind="native", bytes_per_iteration=round(native_evidence.slope, 1),
                blocks_per_iteration=0.0, confidence=native_evidence.confidence,
                partial=partial, evidence=facts, summary="",
            )
    return Verdict(
        leak=False, kind="none", bytes_per_iteration=round(max(evidence.slope, 0.0), 1),
        blocks_per_iteration=round(max(block_rate, 0.0), 2), confidence=evidence.confidence,
        partial=partial, evidence=facts, summary="",
    )


def _ever_growing_holder(run: Run) -> Holder | None:
    """A real worker's unbounded container of the user's that grew at every holder
    walk, the last one at the run's end, by at least HOLDER_MIN_ITEMS per unit.

    Only for ``leakscope run``: a worker's byte series can dip at its very end
    (a drained queue, connections closed), which the floors of the rule read
    as growth that stopped, while a container that never stopped growing is
    the leak itself. A cache that fills and stops would miss the last walks.
    """
    if run.process is None:
        return None
    for holder in run.holders:
        series = holder.items_series
        if (
            holder.growing and holder.bound is None and len(series) >= HOLDER_MIN_WALKS
            and all(b > a for a, b in zip(series, series[1:]))
            and holder.items_per_iteration >= HOLDER_MIN_ITEMS
            and any(is_user_file(line.rsplit(":", 1)[0]) for line in
                    holder.items_made_at + holder.callables_defined_at
                    + ([holder.grown_at] if holder.grown_at else []))
        ):
            return holder
    return None


def _filling_bounds(run: Run) -> list[dict]:
    """Bounded containers still filling, when no unbounded holder grows.

    A cache whose ceiling is known (an lru_cache's maxsize, a deque's maxlen)
    grows like a leak until it is full; with nothing else growing, that
    growth is the cache filling, however short the run.
    """
    if any(h.growing for h in run.holders):
        return []
    return [b for b in run.bounded if b.get("filling")]


def _bound_filled(run: Run, length: int) -> tuple[dict, int] | None:
    """A bounded container that became full during the window, and the loop it did.

    Only when no unbounded container grows: one that does is a leak whatever
    a cache beside it does. The loop is read on the series of the lines that
    made the bound's entries: where their bytes reach their final level.
    """
    if any(h.growing and h.bound is None for h in run.holders):
        return None
    for bound in run.bounded:
        first = (bound.get("items_series") or [0])[0]
        if not bound.get("bound") or bound.get("items", 0) < bound["bound"] or first >= bound[
                "bound"]:
            continue
        lines = {(str(f), int(n)) for f, n in bound.get("lines_made", [])}
        series = [site.series for site in run.sites if (site.file, site.line) in lines]
        points = len(series[0]) if series else 0
        if points < 2 or any(len(values) != points for values in series):
            continue
        total = [sum(values) for values in zip(*series)]
        rise = total[-1] - min(total)
        if rise <= 0:
            continue
        reached = next(i for i, v in enumerate(total) if v >= total[-1] - FILL_TOLERANCE * rise)
        # Site series are thinned to SERIES_POINTS (thin()): map back to the loop.
        at = reached if points == length else (
            length - 1 if reached == points - 1 else int(reached * length / points))
        return bound, at
    return None


def _filled_undecided(
    run: Run, traced: list[float], bound: dict, at: int, evidence: Evidence, partial: bool,
) -> Verdict:
    """Growth that stopped as a bound filled, with too few loops since to say more."""
    needed = AFTER_FILL_LOOPS - (len(traced) - at)
    rate = evidence.slope
    growing = Verdict(
        leak=True, kind="reachable", bytes_per_iteration=round(rate, 1),
        blocks_per_iteration=0.0, confidence=evidence.confidence, partial=partial,
        evidence={"measured_loops": len(traced), "p_value": evidence.p_value,
                  "bound_filled_at": at, "bound_filled": bound["path"]},
        summary="",
    )
    unit = run.unit
    what = (f"{format_bytes(rate)}/{short_unit(unit)} of memory grew until {bound['path']} "
            f"({bound['type']}) filled to its bound of {bound['bound']:,} at {unit} {at + 1:,} "
            f"of {len(traced):,}; until then other growth cannot be told from its filling (a "
            "full cache's tuples and lists come from the interpreter's free lists and keep "
            f"the lines that first made them), and {len(traced) - at - 1:,} {unit}s since "
            "are too few")
    return _undecided(growing, run, needed, what, 0.0, 0.0, False)


def _bounded_summary(bounded: dict, byte_rate: float, loops: int, unit: str) -> str:
    series = bounded.get("items_series") or [0, 0]
    per_loop = (series[-1] - series[0]) / max(1, loops)
    text = (
        f"No leak: the growth is {bounded['path']} ({bounded['type']}) filling toward its "
        f"bound of {bounded['bound']:,} ({bounded['items']:,} now)"
    )
    if per_loop > 0:
        remaining = math.ceil((bounded["bound"] - bounded["items"]) / per_loop)
        ceiling = byte_rate / per_loop * bounded["bound"]
        text += (
            f"; it stops growing after ~{remaining:,} more {unit}s, "
            f"at about {format_bytes(ceiling)}"
        )
    return text + "."


def project(verdict: Verdict, run: Run, memory_limit: int) -> Verdict:
    """After how many more iterations the process reaches ``memory_limit`` of RSS."""
    verdict = replace(verdict, memory_limit_bytes=memory_limit)
    unit = run.unit
    if not verdict.leak or verdict.bytes_per_iteration <= 0:
        verdict.projection = (
            f"No growth to project: RSS stays under the {format_bytes(memory_limit)} limit "
            "at this rate."
        )
        return verdict
    last = run.loops[-1] if run.loops else None
    rss = (last.rss_bytes or 0) - (getattr(last, "tracemalloc_bytes", 0) or 0) if last else 0
    remaining = memory_limit - rss
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(unit)}"
    if remaining <= 0:
        verdict.iterations_to_limit = 0
        verdict.projection = f"RSS is already above the {format_bytes(memory_limit)} limit."
        return verdict
    count = math.ceil(remaining / verdict.bytes_per_iteration)
    verdict.iterations_to_limit = count
    verdict.projection = (
        f"At {rate}, RSS ({format_bytes(rss)} now) reaches the "
        f"{format_bytes(memory_limit)} limit after ~{count:,} more {unit}s: recycle the "
        f"worker sooner (max_requests / max_tasks_per_child < {count:,})."
    )
    return verdict


# ---------------------------------------------------------------------- sites


def rank_sites(sites: list[Site], leak: bool) -> list[Site]:
    """Rate and rank allocation sites; keep the ones that grow, most growth first."""
    ranked = []
    for site in sites:
        series = site.series
        if len(series) >= 2:
            floor = suffix_minima(series)
            site.bytes_per_iteration = round(theil_sen(floor), 1)
            quarter = max(1, len(floor) // 4)
            still_rising = floor[-1] > floor[-quarter - 1] if len(floor) > quarter else False
            site.growing = leak and not site.filling and site.bytes_per_iteration > 0 and (
                still_rising or ratchet(series).leak
            )
        site.series = [int(v) for v in thin(series)]
        ranked.append(site)
    ranked.sort(key=lambda s: (s.growing, s.bytes_per_iteration, s.kept_bytes), reverse=True)
    return [s for s in ranked[:SITE_LIMIT] if s.kept_bytes > 0 or s.bytes_per_iteration > 0]


def _mark_native_sites(run: Run, verdict: Verdict, native: list[Site]) -> None:
    """memray's native sites: kept if steady over the window, growing only under a native leak.

    memray's "leaked" means "not freed when its window closed": one buffer
    an extension caches, or a pool it grew once, is no leak. A site must have
    kept blocks in at least half the window's loops (``native_sites.steady``),
    and the verdict, decided on the counters, must call the growth native.
    """
    loops = int((run.observations.get("locator") or {}).get("loops") or 0)
    if not native:
        return
    from leakscope.native_sites import steady

    kept = [site for site in native if loops >= 1 and steady(site, loops)]
    for site in kept:
        site.growing = verdict.leak and verdict.kind == "native"
    # Under a native leak its native sites come first (they are the culprit),
    # else after tracemalloc's.
    kept.sort(key=lambda s: s.kept_bytes, reverse=True)
    kept = kept[:SITE_LIMIT]
    run.sites = kept + run.sites if verdict.kind == "native" else run.sites + kept


def _ended(run: Run) -> str:
    """Why the run stopped before its last loop ("" when it did not)."""
    if run.observations.get("interrupted"):
        return "interrupted"
    ended = run.observations.get("ended")
    return ended if isinstance(ended, str) else ""


def _partial_prefix(verdict: Verdict, run: Run) -> str:
    """The words before the summary of a run that ended early: Partial run (why; N measured)."""
    if not verdict.partial:
        return ""
    measured, unit = len(run.measured), run.unit
    if verdict.ended and verdict.ended != "interrupted":
        return f"Partial run ({verdict.ended}; {measured} measured {unit}s): "
    return f"Partial run (interrupted after {measured} measured {unit}s): "


def describe(verdict: Verdict, run: Run) -> str:
    """The one sentence a person reads first."""
    unit = run.unit
    prefix = _partial_prefix(verdict, run)
    if verdict.summary and not verdict.leak:
        return prefix + verdict.summary
    if not verdict.leak:
        return prefix + (
            f"No leak: memory kept per {unit} does not keep growing "
            f"(confidence {verdict.confidence:.2f})."
        )
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(unit)}"
    holder = next((h for h in run.holders if h.growing), None)
    site = next((s for s in run.sites if s.growing), None)
    if verdict.kind == "native" and site is not None and site.native:
        return prefix + (
            f"Leak (native, {rate}, confidence {verdict.confidence:.2f}): "
            f"{describe_native_site(site, unit)}."
        )
    where = ""
    if site is not None and site.user_frame is not None:
        uf = site.user_frame
        where = f"; open {uf.file}:{uf.line} ({uf.function}) first"
    if holder is not None:
        return prefix + f"Leak ({verdict.kind}, {rate}, confidence {verdict.confidence:.2f}): " + \
            describe_holder(holder, unit) + "."
    kinds = {
        "reachable": "still reachable",
        "cyclic-garbage": "unreachable cycles that only gc.collect() frees (gc is disabled)",
        "native": "outside the Python heap (C extension or ctypes memory)",
    }
    count = format_count(verdict.blocks_per_iteration)
    blocks = f", {count} block{'' if count == '1' else 's'}" if verdict.blocks_per_iteration else ""
    return prefix + (
        f"Leak ({verdict.kind}): {rate}{blocks} kept per {unit}, "
        f"{kinds.get(verdict.kind, verdict.kind)}, confidence {verdict.confidence:.2f}{where}."
    )


def describe_native_site(site: Site, unit: str = "iteration") -> str:
    """``native memory allocated by `foo_alloc` (libfoo.so) under `worker.py:38`, ...``."""
    native = site.native or {}
    where = site.user_frame or site
    return (
        f"native memory allocated by `{native.get('function', '?')}` "
        f"({native.get('library', '<unknown>')}) under `{where.file}:{where.line}`, "
        f"{format_bytes(site.bytes_per_iteration)} per {unit}"
    )


def _plural(noun: str, count: str) -> str:
    if count == "1":
        return noun
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def describe_holder(holder: Holder, unit: str = "iteration") -> str:
    """``app.Console.bootstrappers (list) gains 1 closure per request; made at ...``."""
    count = format_count(holder.items_per_iteration)
    if holder.found_by == "backrefs":
        text = (
            f"{holder.path} ({holder.type}, {holder.items_last:,} items) holds the growing "
            f"{_plural(holder.item_noun, 'many')} (found by following references back)"
        )
    else:
        text = (
            f"{holder.path} ({holder.type}) gains {count} "
            f"{_plural(holder.item_noun, count)} per {unit}"
        )
    made = holder.items_made_at or holder.callables_defined_at
    where = []
    if made:
        where.append(f"made at {', '.join(made[:2])}")
    defined = [d for d in holder.callables_defined_at if d not in made]
    if defined:
        where.append(f"defined at {', '.join(defined[:2])}")
    if holder.grown_at:
        verb = "appended" if holder.type in ("list", "collections.deque") else "added"
        where.append(f"{verb} at {holder.grown_at}")
    return text + ("; " + ", ".join(where) if where else "")


def link_sites(sites: list[Site], holders: list[Holder]) -> None:
    """Point each site at the holder whose items it made or whose storage it grew."""
    for holder in holders:
        lines = set(holder.items_made_at) | ({holder.grown_at} if holder.grown_at else set())
        for site in sites:
            user = site.user_frame
            here = {f"{site.file}:{site.line}"} | ({f"{user.file}:{user.line}"} if user else set())
            if site.holder is None and here & lines:
                site.holder = holder.path


def analyse(run: Run) -> Run:
    """Decide the verdict, rank sites and holders, write the summary and projection."""
    verdict = decide(run)
    ended = _ended(run)
    if ended:
        verdict.partial, verdict.ended = True, ended
    native = [site for site in run.sites if site.engine == "memray"]
    run.sites = rank_sites([site for site in run.sites if site.engine != "memray"],
                           verdict.leak and verdict.kind != "native")
    _mark_native_sites(run, verdict, native)
    if not verdict.leak:
        _clear_growing(run)
    run.holders.sort(key=lambda h: not h.growing)  # stable: keeps the probe's ranking
    link_sites(run.sites, [h for h in run.holders if h.growing])
    if run.process is not None:
        verdict = _framework_growth_undecided(verdict, run)
    else:
        verdict = _threaded_growth_undecided(verdict, run)
    verdict = _rising_undecided(verdict, run)
    if not verdict.leak:
        _clear_growing(run)
    verdict = project(verdict, run, int(run.settings.get("memory_limit", 512 * 1024**2)))
    if verdict.leak and verdict.evidence.get("untraced"):
        verdict.summary = _describe_untraced(verdict, run)
    elif verdict.undecided:
        verdict.summary = _partial_prefix(verdict, run) + verdict.summary
    else:
        verdict.summary = describe(verdict, run)
        inside = verdict.evidence.get("library_only")
        if verdict.leak and inside:
            at = f" (first at {inside})" if isinstance(inside, str) else ""
            verdict.summary += (
                f" It grows only inside framework or library code{at}, with no container "
                f"or line of yours behind it, over {len(run.measured):,} {run.unit}s."
            )
    run.verdict = verdict
    return run


def _clear_growing(run: Run) -> None:
    """A verdict of "no leak" or "Undecided" marks nothing as growing.

    `compare`, the CI line and the console list what is marked: a mark left
    on a site or a holder would name a culprit the verdict does not call.
    """
    for site in run.sites:
        site.growing = False
    for holder in run.holders:
        holder.growing = False


def _describe_untraced(verdict: Verdict, run: Run) -> str:
    """A watched process that grew but was never traced: the counters' word, no lines."""
    unit = run.unit
    if verdict.kind == "native":
        rate = f"{format_bytes(verdict.bytes_per_iteration)} of malloc"
    else:
        rate = f"{format_count(verdict.blocks_per_iteration)} allocated blocks"
    if run.process is None:  # `trace` or `check` in fast mode, ended before locating
        return _partial_prefix(verdict, run) + (
            f"Leak ({verdict.kind}, from the counters): {rate} kept per {unit}, confidence "
            f"{verdict.confidence:.2f}. The run ended before the loops that locate it, so "
            f"no line or container is named."
        )
    return (
        f"Leak ({verdict.kind}, from the counters): {rate} kept per {unit}, confidence "
        f"{verdict.confidence:.2f}. This process was watched, not traced, so no line or "
        f"container is named: run it longer (tracing starts once its counters grow, from "
        f"the 100th {unit}) or with --sample 1."
    )


def _user_attributed(run: Run, growth_rate: float) -> bool:
    """Whether the growth is in the user's own code: a growing site or container of theirs."""
    rate = max([growth_rate] + [s.bytes_per_iteration for s in run.sites if s.growing])
    for site in run.sites:
        # A user line counts when it carries a real share of the whole growth,
        # not a few bytes beside a framework's filling cache: objects a user
        # line made and freed wait in the interpreter's free lists, and the
        # framework's cache that takes them keeps them under the user's line.
        # Nor does a line whose kept memory fell back in bulk during the run
        # (a gc collection, a cleared buffer): what it keeps is released, and
        # over a short run the floor of such a saw-tooth can still look like
        # growth (rq 3's clean SimpleWorker: +64 B a job, back every ~50 jobs).
        if site.growing and site.user_frame is not None and (
            site.bytes_per_iteration >= USER_SHARE * rate
        ) and not gave_back(site.series):
            return True
    for holder in run.holders:
        if not holder.growing:
            continue
        lines = holder.items_made_at + holder.callables_defined_at + (
            [holder.grown_at] if holder.grown_at else [])
        if any(is_user_file(line.rsplit(":", 1)[0]) for line in lines):
            return True
    return False


def gave_back(series: Sequence[float]) -> bool:
    """Whether a series fell, at some point, by GAVE_BACK_SHARE of its whole range or more."""
    if len(series) < 3:
        return False
    spread = max(series) - min(series)
    peak, drop = series[0], 0.0
    for value in series:
        peak = max(peak, value)
        drop = max(drop, peak - value)
    return spread > 0 and drop >= GAVE_BACK_SHARE * spread


def _half_rates(run: Run) -> tuple[float, float]:
    """Growth rates (per unit) of the kept-bytes floor in the first and second half."""
    loops = [loop for loop in run.measured if loop.traced_bytes is not None]
    values = [float(loop.traced_bytes) for loop in loops]
    if len(values) < 2 * MIN_LOOPS:
        return 0.0, 0.0
    floor = suffix_minima(values)
    half = len(floor) // 2
    # Traced units are consecutive (every unit, or one window of them).
    return theil_sen(floor[:half]), theil_sen(floor[half:])


def _framework_growth_undecided(verdict: Verdict, run: Run) -> Verdict:
    """A real worker's growth that only the framework's code makes, over too few units.

    See FRAMEWORK_HORIZON: the verdict stays "no leak" and says how many more
    units would tell a filling bound from a leak. A process that was watched
    but never traced has only its counters: nothing ties their growth to a
    line or container of the user's, so it is framework-only growth too.
    """
    measured = len(run.measured)
    untraced = bool(verdict.evidence.get("untraced"))
    if not verdict.leak or (
        not untraced and _user_attributed(run, verdict.bytes_per_iteration)
    ):
        return verdict
    first, second = _half_rates(run)
    settling = first > 0 and second < SETTLING_RATIO * first
    if measured >= FRAMEWORK_HORIZON and not settling:
        if untraced:
            return verdict
        where = next((f"{s.file}:{s.line}" for s in run.sites if s.growing), None)
        return replace(verdict, evidence={**verdict.evidence, "library_only": where or True})
    # Still short of the horizon, or the rate is dying away as a bound fills:
    # a run as long again would show whether it levels off.
    needed = max(FRAMEWORK_HORIZON - measured, measured if settling else 0)
    if untraced:
        what = (f"{format_count(verdict.blocks_per_iteration)} allocated blocks/"
                f"{short_unit(run.unit)} grow in the counters of a process that was "
                "watched, not traced, so no line or container of yours is behind them, "
                "which may be a bound still filling")
        return _undecided(verdict, run, needed, what, first, second, settling)
    where = next((f"{s.file}:{s.line}" for s in run.sites if s.growing), None)
    inside = f" (first at {where})" if where else ""
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(run.unit)}"
    memory = "native memory" if verdict.kind == "native" else "memory"
    what = (f"{rate} of {memory} grows only inside framework or library code{inside}, "
            "which may be a bound still filling")
    return _undecided(verdict, run, needed, what, first, second, settling)


def _threaded_growth_undecided(verdict: Verdict, run: Run) -> Verdict:
    """`trace`: growth while other threads ran, with no growing container behind it.

    See THREADED_HORIZON. tracemalloc does not say which thread allocated, so
    a rising floor in a short run may be another thread's warm-up; a container
    the holder walk saw growing at every checkpoint is the worker's own leak.
    """
    others = int(run.observations.get("other_threads_max") or 0)
    if not verdict.leak or not others or any(h.growing for h in run.holders):
        return verdict
    measured = len(run.measured)
    first, second = _half_rates(run)
    settling = first > 0 and second < SETTLING_RATIO * first
    if measured >= THREADED_HORIZON and not settling:
        return verdict
    needed = max(THREADED_HORIZON - measured, measured if settling else 0)
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(run.unit)}"
    if not verdict.bytes_per_iteration:
        rate = f"{format_count(verdict.blocks_per_iteration)} blocks/{short_unit(run.unit)}"
    what = (f"{rate} of memory grows while {others} other thread"
            f"{'' if others == 1 else 's'} of the worker ran, with no growing container "
            "behind it: their buffers and caches may still be warming up")
    undecided = _undecided(verdict, run, needed, what, first, second, settling)
    undecided.evidence["other_threads_max"] = others
    return undecided


def _rising_undecided(verdict: Verdict, run: Run) -> Verdict:
    """A "no leak" the run's own data doubts is "Undecided".

    A no-leak verdict's confidence is the chance that the floor's next step
    does not rise, read on the last half of the run. Under 1 - TAIL_RISE_FRACTION,
    the floor rose as persistently as the rule asks of a leak, short only of its
    significance (a saw-tooth of the gc's collections over a short run hides a
    small leak that way): the run says neither, and as many loops again would tell.
    """
    if (verdict.leak or verdict.undecided or verdict.confidence >= 1 - TAIL_RISE_FRACTION
            or verdict.summary.startswith("Too few")):
        return verdict
    measured = len(run.measured)
    first, second = _half_rates(run)
    what = (f"the kept memory's floor rose on most of the run's last steps, short of "
            f"the rule's significance (a no leak would have confidence "
            f"{verdict.confidence:.2f})")
    return _undecided(verdict, run, max(measured, MIN_LOOPS), what, first, second, False)


def _undecided(
    verdict: Verdict, run: Run, needed: int, what: str, first: float, second: float,
    settling: bool,
) -> Verdict:
    """Neither leak nor no leak: what grew, and how many more units would tell.

    Its confidence is 0: the run's p-value said the floor rose, not whose it is.
    """
    measured = len(run.measured)
    unit = run.unit
    evidence = {**verdict.evidence, "needs_units": needed, "undecided_kind": verdict.kind,
                "undecided_rate": verdict.bytes_per_iteration,
                "undecided_confidence": verdict.confidence,
                "first_half_rate": round(first, 1), "second_half_rate": round(second, 1)}
    total = f"{measured + needed:,} in all"
    if run.process is None:
        total = f"--iterations {measured + needed}"
    slowing = (f"; its rate fell from {format_bytes(first)} to {format_bytes(second)}/"
               f"{short_unit(unit)} between the halves of the run" if settling else "")
    return replace(
        verdict, leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
        confidence=0.0, evidence=evidence,
        summary=(
            f"Undecided, not called a leak: {what}{slowing}; run about {needed:,} more "
            f"{unit}s ({total}) to tell."
        ),
    )
