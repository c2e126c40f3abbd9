"""Loop series to a Verdict, in four jobs: statistics (``stats``), the verdict's
rules (``rules``), the worker policy that keeps doubtful growth undecided
(``policy``) and the sentences (``prose``); ``ranking`` rates the sites.
"""

from __future__ import annotations

from leakscope.analysis.policy import (
    framework_growth_undecided,
    rising_floor_undecided,
    threaded_growth_undecided,
)
from leakscope.analysis.prose import describe, describe_untraced, ended_by, partial_prefix
from leakscope.analysis.ranking import link_sites, mark_native_sites, rank_sites
from leakscope.analysis.rules import decide, project
from leakscope.model.runfile import Run

__all__ = ["analyse", "decide", "describe", "project"]


def analyse(run: Run) -> Run:
    """Decide the verdict, rank sites and holders, write the summary and projection."""
    verdict = decide(run)
    ended = ended_by(run)
    if ended:
        verdict.partial, verdict.ended = True, ended
    native = [site for site in run.sites if site.engine == "memray"]
    run.sites = rank_sites([site for site in run.sites if site.engine != "memray"],
                           verdict.leak and verdict.kind != "native")
    mark_native_sites(run, verdict, native)
    if not verdict.leak:
        _clear_growing(run)
    run.holders.sort(key=lambda h: not h.growing)  # stable: keeps the probe's ranking
    link_sites(run.sites, [h for h in run.holders if h.growing])
    if run.process is not None:
        verdict = framework_growth_undecided(verdict, run)
    else:
        verdict = threaded_growth_undecided(verdict, run)
    verdict = rising_floor_undecided(verdict, run)
    if not verdict.leak:
        _clear_growing(run)
    verdict = project(verdict, run, int(run.settings.get("memory_limit", 512 * 1024**2)))
    if verdict.leak and verdict.evidence.get("untraced"):
        verdict.summary = describe_untraced(verdict, run)
    elif verdict.undecided:
        verdict.summary = partial_prefix(verdict, run) + verdict.summary
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
