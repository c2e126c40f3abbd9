"""When growth is not yet the worker's: undecided, with the units that would tell.

A real worker's framework warming up, other threads allocating, a floor that
rose short of significance: each turns a verdict into "Undecided", confidence 0.
"""

from __future__ import annotations

from dataclasses import replace

from leakscope.analysis.stats import (
    MIN_LOOPS,
    TAIL_RISE_FRACTION,
    gave_back,
    suffix_minima,
    theil_sen,
)
from leakscope.model.runfile import Run, Verdict
from leakscope.model.sites import is_user_file
from leakscope.model.units import format_bytes, format_count, short_unit

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

# `trace`: other threads of the worker (a server it started in `setup()`, a
# pool) allocate on their own schedule while the loop runs, and their buffers
# and per-connection state fill for hundreds of loops: an HTTP server in a
# thread kept ~250 request strings, rising over 50 loops, flat from the 500th.
# Over a short run that rise cannot be told from a leak, so when other threads
# were alive and no growing container was found, the verdict stays undecided
# until this many loops, the horizon of framework-only growth.
THREADED_HORIZON = FRAMEWORK_HORIZON

# Framework-only growth whose rate in the second half of the run is below
# this share of the first half's is settling (a bound filling), at any length.
SETTLING_RATIO = 0.5


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


def half_rates(run: Run) -> tuple[float, float]:
    """Growth rates (per unit) of the kept-bytes floor in the first and second half."""
    values = [float(loop.traced_bytes) for loop in run.measured if loop.traced_bytes is not None]
    if len(values) < 2 * MIN_LOOPS:
        return 0.0, 0.0
    floor = suffix_minima(values)
    half = len(floor) // 2
    # Traced units are consecutive (every unit, or one window of them).
    return theil_sen(floor[:half]), theil_sen(floor[half:])


def framework_growth_undecided(verdict: Verdict, run: Run) -> Verdict:
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
    first, second = half_rates(run)
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
        return make_undecided(verdict, run, needed, what, first, second, settling)
    where = next((f"{s.file}:{s.line}" for s in run.sites if s.growing), None)
    inside = f" (first at {where})" if where else ""
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(run.unit)}"
    memory = "native memory" if verdict.kind == "native" else "memory"
    what = (f"{rate} of {memory} grows only inside framework or library code{inside}, "
            "which may be a bound still filling")
    return make_undecided(verdict, run, needed, what, first, second, settling)


def threaded_growth_undecided(verdict: Verdict, run: Run) -> Verdict:
    """`trace`: growth while other threads ran, with no growing container behind it.

    See THREADED_HORIZON. tracemalloc does not say which thread allocated, so
    a rising floor in a short run may be another thread's warm-up; a container
    the holder walk saw growing at every checkpoint is the worker's own leak.
    A "no leak" whose floor rose at every late step over one span of loops
    (``floor_rose_at_scale``: the threads' saw-tooth hid it at the others),
    and still in the run's second half, is the same growth short of
    significance, and as undecided.
    """
    others = int(run.observations.get("other_threads_max") or 0)
    doubted = not verdict.leak and bool(verdict.evidence.get("floor_rose_at_scale"))
    if not (verdict.leak or doubted) or not others or any(h.growing for h in run.holders):
        return verdict
    measured = len(run.measured)
    first, second = half_rates(run)
    settling = first > 0 and second < SETTLING_RATIO * first
    if doubted and second <= 0:
        return verdict  # the floor stopped rising in the run's second half
    if measured >= THREADED_HORIZON and not settling:
        return verdict
    needed = max(THREADED_HORIZON - measured, measured if settling else 0)
    facts = verdict.evidence
    if doubted:
        verdict = replace(verdict, bytes_per_iteration=facts["floor_rose_rate"])
    rate = f"{format_bytes(verdict.bytes_per_iteration)}/{short_unit(run.unit)}"
    if not verdict.bytes_per_iteration:
        rate = f"{format_count(verdict.blocks_per_iteration)} blocks/{short_unit(run.unit)}"
    short = ""
    if doubted:
        rises, steps = facts["floor_rose_steps"]
        short = (f" (short of the rule's significance: its floor rose at {rises} of "
                 f"{steps} steps over spans of {facts['floor_rose_at_scale']} "
                 f"{short_unit(run.unit)}s, p = {facts['floor_rose_p_value']:.3f} at that "
                 f"span alone, before correcting for the {facts['floor_rose_scales']} "
                 "spans the rule tries)")
    what = (f"{rate} of memory grows while {others} other thread"
            f"{'' if others == 1 else 's'} of the worker ran{short}, with no growing "
            "container behind it: their buffers and caches may still be warming up")
    undecided = make_undecided(verdict, run, needed, what, first, second, settling)
    undecided.evidence["other_threads_max"] = others
    return undecided


def rising_floor_undecided(verdict: Verdict, run: Run) -> Verdict:
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
    first, second = half_rates(run)
    what = (f"the kept memory's floor rose on most of the run's last steps, short of "
            f"the rule's significance (a no leak would have confidence "
            f"{verdict.confidence:.2f})")
    return make_undecided(verdict, run, max(measured, MIN_LOOPS), what, first, second, False)


def make_undecided(
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
