"""Many processes' runs into one run file, and the recycling advice in the workers' own terms.

The top-level verdict, sites and holders are those of the leaking process
that grows most, so ``report``, ``html``, ``check`` and ``diff`` read a
``leakscope run`` file as they read a ``trace`` file; ``processes`` keeps
every process's own run.
"""

from __future__ import annotations

import copy
from typing import Any

from leakscope.model.runfile import Run, Verdict, new_run
from leakscope.model.units import format_bytes

# A child whose peak RSS is this far above its current RSS spiked once.
SPIKE_MIN_BYTES = 16 * 1024 * 1024
SPIKE_MIN_RATIO = 1.25
# Recycle with this much headroom below the limit: RSS also moves with
# fragmentation and the size of the task in flight.
RECYCLE_HEADROOM = 0.9


def combine(runs: list[Run], command: str, settings: dict[str, Any], started_at: str) -> Run:
    """One run for the whole command: the worst leaking process on top, all in ``processes``."""
    working = [run for run in runs if run.measured]
    leaking = sorted(
        (run for run in working if run.verdict is not None and run.verdict.leak),
        key=_growth, reverse=True,
    )
    lead = leaking[0] if leaking else max(working, key=lambda r: len(r.measured), default=None)
    run = new_run(command, settings, started_at=started_at)
    run.processes = runs
    if lead is not None:
        run.loops = lead.loops
        run.sites = lead.sites
        run.holders = lead.holders
        run.bounded = lead.bounded
        run.unit = lead.unit
        run.mode = lead.mode
        run.observations = copy.deepcopy(lead.observations)
        run.observations["lead_process"] = lead.process
    if leaking:
        assert leaking[0].verdict is not None
        run.verdict = copy.deepcopy(leaking[0].verdict)
        others = len(leaking) - 1
        if others:
            run.verdict.summary += (
                f" {others} more process{'es' if others > 1 else ''} leak too "
                f"(see processes)."
            )
    else:
        run.verdict = _no_leak(working, runs, run.unit)
    run.observations["processes"] = [
        {**(p.process or {}), "leak": bool(p.verdict and p.verdict.leak),
         "kind": p.verdict.kind if p.verdict else "none",
         "bytes_per_iteration": p.verdict.bytes_per_iteration if p.verdict else 0.0}
        for p in runs
    ]
    run.observations["advice"] = [line for p in runs for line in advice(p)]
    return run


def _growth(run: Run) -> float:
    """What a leaking process gained over its run: its rate times the units it measured.

    The process that did most of the work has the most evidence (holder walks,
    the line that grows its container), and the rate alone would favour a
    process that ran a handful of units at a noisy rate.
    """
    rate = run.verdict.bytes_per_iteration if run.verdict else 0.0
    return rate * len(run.measured)


def _no_leak(working: list[Run], runs: list[Run], unit: str) -> Verdict:
    units = sum(len(run.measured) for run in working)
    undecided = [run for run in working if run.verdict and run.verdict.evidence.get("needs_units")]
    confidence = min((run.verdict.confidence for run in working if run.verdict), default=0.0)
    which = ("the process" if len(working) == 1
             else f"any of the {len(working)} processes")
    summary = f"No leak in {which} that did work ({units:,} measured {unit}s; {_watched(runs)})."
    if undecided:
        more = max(int(run.verdict.evidence["needs_units"]) for run in undecided if run.verdict)
        summary += f" Not yet decided for {len(undecided)}: run about {more:,} more {unit}s."
    return Verdict(
        leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
        confidence=confidence, summary=summary,
        evidence={"processes": len(runs), "working_processes": len(working),
                  "measured_units": units},
    )


def _watched(runs: list[Run]) -> str:
    """How many processes were watched and how many of them traced, as the table counts them.

    Under ``--sample auto`` a process is watched with its counters and traced
    only once they grow, so the two counts differ and both are said.
    """
    traced = sum(1 for run in runs if (run.process or {}).get("traced_units"))
    watched = f"{len(runs)} process{'es' if len(runs) != 1 else ''} watched"
    if traced == len(runs):
        return f"{watched}, all traced" if traced > 1 else f"{watched} and traced"
    return f"{watched}, {traced or 'none'} traced"


# ------------------------------------------------------------------ advice


def advice(run: Run) -> list[str]:
    """What to set so this process is recycled before it reaches its memory limit."""
    process = run.process or {}
    verdict = run.verdict
    lines: list[str] = []
    label = f"{process.get('role', 'process')} (pid {process.get('pid', '?')})"
    framework = process.get("framework")
    unit = run.unit
    if verdict is not None and verdict.leak and verdict.bytes_per_iteration > 0:
        limit = process.get("max_memory_per_child_bytes") or verdict.memory_limit_bytes
        start = _start_rss(run)
        if limit and start is not None and limit > start:
            units = int(RECYCLE_HEADROOM * (limit - start) / verdict.bytes_per_iteration)
            setting = _recycle_setting(framework, units)
            lines.append(
                f"{label}: at {format_bytes(verdict.bytes_per_iteration)}/{unit} from "
                f"{format_bytes(start)}, it reaches {format_bytes(limit)} after about "
                f"{units / RECYCLE_HEADROOM:,.0f} {unit}s; {setting} keeps it under that "
                "until the leak is fixed"
            )
    spike = ru_maxrss_spike(run)
    if spike:
        lines.append(f"{label}: {spike}")
    return lines


def _start_rss(run: Run) -> int | None:
    for loop in run.measured:
        if loop.rss_bytes:
            return int(loop.rss_bytes)
    return None


def _recycle_setting(framework: str | None, units: int) -> str:
    units = max(1, units)
    if framework == "celery":
        return f"--max-tasks-per-child={units}"
    if framework == "gunicorn":
        return f"--max-requests {units} --max-requests-jitter {max(1, units // 10)}"
    if framework == "rq":
        return f"rq worker --max-jobs {units} (under a supervisor that restarts it)"
    return f"recycling the process every {units:,} units"


def ru_maxrss_spike(run: Run) -> str | None:
    """Celery's --max-memory-per-child reads the peak RSS: a child that spiked once is
    recycled after every task from then on. Say so when this run shows that shape."""
    process = run.process or {}
    peak = own_peak_rss(run)
    now = process.get("rss_bytes") or _last_rss(run)
    if not peak or not now:
        return None
    if peak - now < SPIKE_MIN_BYTES or peak < SPIKE_MIN_RATIO * now:
        return None
    text = (
        f"peaked at {format_bytes(peak)} resident but holds {format_bytes(now)} now: "
        "one unit spiked and was freed"
    )
    limit = process.get("max_memory_per_child_bytes")
    if process.get("framework") == "celery":
        if limit and now < limit <= peak:
            text += (
                f". Celery's --max-memory-per-child ({format_bytes(limit)}) compares the "
                "peak (ru_maxrss), not the current RSS, so this child is recycled after "
                "every task from now on; raise the limit above the spike or move the "
                "spiking task to its own queue"
            )
        else:
            text += (
                ". Celery's --max-memory-per-child compares this peak (ru_maxrss), not the "
                f"current RSS: a limit under {format_bytes(peak)} recycles the child after "
                "every task"
            )
    return text


def own_peak_rss(run: Run) -> int | None:
    """The peak RSS the worker reached by itself, outside leakscope's traced window.

    A traced window (``--sample auto`` or K) holds tracemalloc's record of
    every block allocated in it; when the window closes that memory is
    freed, but the peak keeps it. So when tracing ended before the process
    did, only a peak reached in an untraced unit that followed an untraced
    unit counts (the unit after the window's last one pays for closing it).
    When tracing went on to the end, the current RSS holds tracing's memory
    too, and the process's peak compares like with like.
    """
    peak = (run.process or {}).get("peak_rss_bytes")
    traced = [loop.traced_bytes is not None for loop in run.loops]
    if not any(traced) or traced[-1]:
        return peak
    own, previous, after_traced = None, None, False
    for loop, is_traced in zip(run.loops, traced):
        value = loop.peak_rss_bytes
        if value is not None:
            if not is_traced and not after_traced and (previous is None or value > previous):
                own = value
            previous = value if previous is None or value > previous else previous
        after_traced = is_traced
    return own


def _last_rss(run: Run) -> int | None:
    for loop in reversed(run.loops):
        if loop.rss_bytes:
            return int(loop.rss_bytes)
    return None
