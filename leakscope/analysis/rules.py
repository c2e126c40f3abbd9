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
  Memory mapped outside malloc (an extension's own ``mmap``, CPython's
  object arenas) moves neither series: RSS beyond what malloc holds from the
  system (free chunks included, so an allocator keeping a burst's memory is
  no growth) passing the rule in whole pages (``stats.page_ratchet``) with at
  least ``RSS_MIN_RATE`` a loop is native too. A page floor that keeps
  rising short of significance is "Undecided", with the loops a leak of that
  rate needs (``stats.loops_to_decide``: 6 at 4 KiB a loop, 72 at 512 B).

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
from dataclasses import replace
from typing import Any

from leakscope.analysis.policy import make_undecided
from leakscope.analysis.prose import bounded_summary, ended_by
from leakscope.analysis.stats import (
    MIN_LOOPS,
    MIN_TAIL_STEPS,
    TAIL_RISE_FRACTION,
    Evidence,
    block_minima,
    loops_to_decide,
    page_ratchet,
    page_size,
    ratchet,
    rose_at_one_scale,
    scales_tried,
    suffix_minima,
    theil_sen,
)
from leakscope.model.runfile import Holder, Loop, Run, Site, Verdict
from leakscope.model.sites import is_user_file
from leakscope.model.units import format_bytes, short_unit

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

# RSS moves in pages; where it is the only native counter, demand an eighth
# of a page a loop (a page every 8 loops). The same floor for RSS beyond
# malloc's heap, where glibc is present (_outside_malloc).
RSS_MIN_RATE = 512.0

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

# A bounded container that filled during the window (urllib.parse.urlsplit's
# lru_cache at a gunicorn worker's 128th request) takes its tuples and lists
# from the interpreter's free lists, where objects other lines made and freed
# were waiting: those lines grow with the cache and stop when it is full. With
# nothing unbounded growing, the growth before the fill is the filling; this
# many loops after it decide whether anything else grows (fewer: undecided,
# whatever the series does after the fill; a clean gunicorn worker's still
# rises for a few hundred requests as the free lists fill to their caps).
AFTER_FILL_LOOPS = 50

# The fill is the loop where the bound's own lines reach their final bytes,
# within this share of their rise.
FILL_TOLERANCE = 0.02


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


def _outside_malloc_series(loops: Sequence[Loop]) -> list[list[float]]:
    """RSS beyond what glibc's malloc holds, read from below and from above, per loop.

    malloc's resident pages lie between the bytes it has in use and the heap
    it took from the system: the pages of a heap it extends are resident
    only once touched, and the pages of what it frees stay resident. So RSS
    beyond its heap rises while it touches a fresh extension (880 KiB in a
    worker churning cyclic garbage, touched over its next 35 loops, about
    1 KiB a loop), and RSS beyond its in-use bytes rises while it frees into
    fragments. Memory mapped outside malloc raises both: the rule reads
    both (the first alone in run files without ``malloc_bytes`` per loop;
    none without glibc).

    A holder walk grows malloc's heap by hundreds of KiB it barely touches
    (the figure drops by that much, holding every earlier floor down): its
    step is replaced as in the native series (``_without_walk_steps``).
    """
    rss = _series(loops, "rss_bytes")
    heap = _series(loops, "malloc_heap_bytes")
    if rss is None or heap is None:
        return []
    bounds = [_without_walk_steps([r - h for r, h in zip(rss, heap)], loops)]
    in_use = _series(loops, "malloc_bytes")
    if in_use is not None:
        bounds.append(_without_walk_steps([r - u for r, u in zip(rss, in_use)], loops))
    return bounds


def _outside_malloc(
    run: Run, loops: Sequence[Loop], facts: dict[str, Any],
) -> tuple[Evidence, int] | None:
    """The page rule on RSS beyond malloc, and the page size; None where not read.

    The weaker of its two readings (``_outside_malloc_series``): growth is
    memory mapped outside malloc only when both rise.

    Only for `trace` and `check`: a real worker's process (`run`, `attach`)
    maps and unmaps on its framework's schedule (threads' stacks, connection
    buffers) over hundreds of units, and an in-process run keeps its own loop
    records in the measured process.
    """
    if run.process is not None or run.observations.get("in_process"):
        return None
    bounds = _outside_malloc_series(loops)
    if not bounds or len(bounds[0]) < MIN_LOOPS:
        return None
    page = page_size(loop.rss_bytes for loop in run.loops if loop.rss_bytes)
    readings = [page_ratchet(series, page) for series in bounds]
    evidence = min(readings, key=lambda e: (e.leak, e.slope))
    facts["outside_malloc_p_value"] = evidence.p_value
    facts["outside_malloc_rate"] = round(evidence.slope, 1)
    return evidence, page


def _outside_malloc_verdict(
    run: Run, loops: Sequence[Loop], facts: dict[str, Any], partial: bool,
) -> Verdict | None:
    """Memory mapped outside malloc that keeps growing: native, undecided, or None.

    RSS that grows while the traced and malloc series do not explain it is
    native growth when its page floor passes the rule. When the floor kept
    rising in whole pages to the end but short of significance (too few
    loops for a leak of that rate to gain enough pages), the verdict is
    undecided and says how many loops would tell.
    """
    read = _outside_malloc(run, loops, facts)
    if read is None:
        return None
    evidence, page = read
    if evidence.leak and evidence.slope >= RSS_MIN_RATE:
        facts["outside_malloc"] = True
        return Verdict(
            leak=True, kind="native", bytes_per_iteration=round(evidence.slope, 1),
            blocks_per_iteration=0.0, confidence=evidence.confidence, partial=partial,
            evidence=facts, summary="",
        )
    if evidence.slope < RSS_MIN_RATE or not all(
        _pages_still_rising(series, page, evidence.slope)
        for series in _outside_malloc_series(loops)
    ):
        return None
    measured = len(loops)
    # The loops a steady leak of this rate needs; past them (noise held the
    # floor back), as many loops again.
    needed = loops_to_decide(evidence.slope, page) - measured
    needed = needed if needed > 0 else measured
    rate = f"{format_bytes(evidence.slope)}/{short_unit(run.unit)}"
    every = max(1, math.ceil(page / evidence.slope))
    what = (f"RSS beyond malloc's heap (memory mapped outside malloc) rose by {rate} to the "
            f"end, short of the rule's significance; RSS moves in {format_bytes(page)} pages, "
            f"a page every {every:,} {run.unit}{'' if every == 1 else 's'} at that rate")
    growing = Verdict(
        leak=True, kind="native", bytes_per_iteration=round(evidence.slope, 1),
        blocks_per_iteration=0.0, confidence=evidence.confidence, partial=partial,
        evidence={**facts, "outside_malloc": True}, summary="",
    )
    return make_undecided(growing, run, needed, what, 0.0, 0.0, False)


def _pages_still_rising(series: Sequence[float], page: int, rate: float) -> bool:
    """Whether the page floor rose steadily: in both halves of the run at half the
    RSS minimum rate or more, and on most of its last steps in blocks of a page's worth.

    Both halves, because an interpreter touches the pages of arenas it already
    mapped as its heap settles (ring_buffer.py in full mode: flat for 25 loops,
    then a page every 4 loops), a rise that starts late and stops; a leak
    rises from the start.
    """
    span = max(1, math.ceil(page / rate))
    pages = [float(v // page) for v in series]
    whole = suffix_minima(pages)
    half = len(whole) // 2
    if min(theil_sen(whole[:half]), theil_sen(whole[half:])) * page < RSS_MIN_RATE / 2:
        return False
    floor = suffix_minima(block_minima(pages, span))
    rising = [b > a for a, b in zip(floor, floor[1:])]
    tail = rising[-max(MIN_TAIL_STEPS, len(rising) // 2):]
    return len(tail) >= MIN_TAIL_STEPS and sum(tail) >= TAIL_RISE_FRACTION * len(tail)


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
    # A watched worker reads its counters every few units (watching.CounterSpacing):
    # the rule reads the units that did, on their even grid (its first units
    # read every one, to know the reads' cost).
    units = len(detect)
    detect = [loop for loop in detect if loop.allocated_blocks is not None]
    spacing = _read_spacing(detect)
    if spacing > 1:
        detect = [loop for loop in detect if (detect[-1].index - loop.index) % spacing == 0]
    blocks = [float(loop.allocated_blocks or 0) for loop in detect]
    malloc = [float(loop.malloc_bytes) for loop in detect if loop.malloc_bytes is not None]
    if len(blocks) < MIN_LOOPS:
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=0.0, partial=partial, evidence={"measured_loops": len(blocks)},
            summary=f"Too few measured loops to decide ({len(blocks)}; at least {MIN_LOOPS}).",
        )
    block_evidence = _per_unit(ratchet(blocks), spacing)
    malloc_evidence = _per_unit(ratchet(malloc), spacing) if len(malloc) == len(blocks) else None
    # Any significant rise is worth locating; only a native verdict needs the
    # malloc rate to clear the noise floor (NATIVE_MIN_RATE).
    malloc_grows = bool(malloc_evidence and malloc_evidence.leak)
    facts = {
        "measured_loops": units, "locate_loops": len(located),
        **({"counter_spacing": spacing, "counter_reads": len(blocks)} if spacing > 1 else {}),
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
    # Memory mapped outside malloc: RSS beyond malloc's heap, read when
    # neither counter grows (the detect phase located it the same way).
    mapped = None
    if not (block_evidence.leak or malloc_grows):
        read = _outside_malloc(run, detect, facts)
        if read is not None and read[0].leak and read[0].slope >= RSS_MIN_RATE:
            mapped = read[0]
            facts["outside_malloc"] = True
    if (block_evidence.leak or malloc_grows or mapped) and len(located) < 2 and ended_by(run):
        # The run ended (the worker died, Ctrl-C) before its locate loops.
        return _counters_verdict(block_evidence, mapped or malloc_evidence,
                                 malloc_grows or mapped is not None, facts, True)
    if not (block_evidence.leak or malloc_grows or mapped):
        undecided = _outside_malloc_verdict(run, detect, facts, partial)
        if undecided is not None:
            return undecided
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0,
            blocks_per_iteration=round(max(block_evidence.slope, 0.0), 2),
            confidence=block_evidence.confidence, partial=partial, evidence=facts, summary="",
        )
    if mapped is not None:
        # Only memory mapped outside malloc grew: judged as malloc's growth is.
        malloc_evidence, malloc_grows = mapped, True
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
    # The rate of reachable growth: what the growing lines kept, line by line.
    # A few locate loops' total moves with one free or resize of memory made
    # before them (blinker_signals: 13 KiB freed after the first), which gave
    # 0-440 B/iter for the same leak, and 0 passed any `check` budget.
    kept_rate = _fate_of_growth(run, len(located)).get("kept_rate", 0.0)
    if (traced.leak and traced.kind != "native") or traced.summary:
        # Reachable, cyclic garbage, or a filling bound: the traced loops tell.
        if traced.leak:
            traced.confidence = strongest.confidence
            if traced.kind == "reachable" and kept_rate > 0:
                traced.bytes_per_iteration = round(kept_rate, 1)
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
    taken_back = _collector_took_back(run, located)
    if taken_back is not None:
        # The blocks rose between two runs of the collector, and the traced loops
        # saw one of its runs take back all they had added: garbage freed on the
        # collector's schedule (once in ~140 loops for a few cycles a loop, close
        # to the detect phase's length), not objects kept.
        return Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=ratchet([float(loop.traced_bytes or 0) for loop in located]).confidence,
            partial=partial, evidence={**facts, "collector_took_back": taken_back}, summary="",
        )
    return Verdict(
        leak=True, kind="reachable", bytes_per_iteration=round(kept_rate, 1),
        blocks_per_iteration=round(block_evidence.slope, 2),
        confidence=block_evidence.confidence, partial=partial, evidence=facts,
        summary="",
    )


def _collector_took_back(run: Run, located: Sequence[Loop]) -> int | None:
    """Bytes the collector freed in the locate loops, when one of its runs there took
    the traced total back to where those loops began (None otherwise).

    The fast rule reads the allocated blocks between collections: in a process
    whose collector runs seldom against the detect phase, cyclic garbage that it
    frees on its own schedule rises there as a kept object would. The locate
    loops, traced, see the difference: a run of the collector among them, and
    nothing of theirs left after it.
    """
    if not run.observations.get("gc_enabled", True) or len(located) < 2:
        return None
    traced = [loop.traced_bytes for loop in located]
    collections = [loop.gc_collections for loop in located]
    if any(value is None for value in traced) or any(value is None for value in collections):
        return None
    first, last = traced[0], traced[-1]
    assert first is not None and last is not None
    ran = any(b > a for a, b in zip(collections, collections[1:]))  # type: ignore[operator]
    peak = max(value for value in traced if value is not None)
    if not ran or last > first or peak <= first:
        return None
    return peak - last


def _read_spacing(loops: Sequence[Loop]) -> int:
    """Units between two loops that read the counters (1 when every unit did)."""
    gaps = sorted(b.index - a.index for a, b in zip(loops, loops[1:]))
    return max(1, gaps[len(gaps) // 2]) if gaps else 1


def _per_unit(evidence: Evidence, spacing: int) -> Evidence:
    """A rule's slope per point, as the rate per unit when the points are ``spacing`` apart."""
    if spacing > 1:
        evidence.slope /= spacing
    return evidence


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
    decided_on = traced
    filled = _bound_filled(run, len(traced)) if evidence.leak and require_significance else None
    if filled is not None:
        bound, at = filled
        # Too few loops since the fill decide nothing, even when the series
        # still rises: a full cache's evictions keep moving objects through
        # the free lists, which rise to their caps for a few hundred loops.
        if len(traced) - at < AFTER_FILL_LOOPS:
            return _filled_undecided(run, traced, bound, at, evidence, partial)
        later = ratchet(traced[at:])
        if not later.leak:
            evidence, decided_on = later, traced[at:]
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
            # Its confidence is the share of the rise seen released, not the
            # rise's own p-value: over fast mode's 6 locate loops that was 0.03,
            # and a "no leak" that low was turned into "undecided".
            released = (fate["gone"] + fate["freed"]) / fate["total"]
            return Verdict(
                leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
                confidence=round(released, 4), partial=partial, evidence=facts,
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
                summary=bounded_summary(filling[0], evidence.slope, len(traced), run.unit),
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
    if require_significance:
        mapped = _outside_malloc_verdict(run, loops, facts, partial)
        if mapped is not None:
            return mapped
        doubt = rose_at_one_scale(decided_on)
        if doubt is not None:
            # policy.rising_floor_undecided reads these: no leak would be a guess.
            facts.update({"floor_rose_at_scale": doubt.scale,
                          "floor_rose_steps": [doubt.rises, doubt.steps],
                          "floor_rose_p_value": round(doubt.p_value, 4),
                          "floor_rose_scales": len(scales_tried(len(decided_on))),
                          "floor_rose_rate": round(doubt.slope, 1)})
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
    return make_undecided(growing, run, needed, what, 0.0, 0.0, False)


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
