"""Plain-text verdicts for CI logs and test reports: the one CI line and a short summary.

``check`` prints these, JUnit XML carries them and the pytest plugin fails
tests with them, so a leak reads the same wherever it is found. No markup:
CI logs and pytest's failure sections show text as it is, so each function
shows its run through ``safe.displayed`` first: no escape sequence or line
break from a run file reaches the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakscope.model.runfile import Holder, Run, Site
from leakscope.model.units import format_bytes, format_count, short_unit
from leakscope.render.paths import short_location, site_location
from leakscope.render.safe import displayed

if TYPE_CHECKING:
    from leakscope.analysis.budget import Decision
    from leakscope.analysis.compare import Comparison

# Growing sites listed under the summary: enough to find the culprit, short
# enough for a CI log or a pytest failure section.
SUMMARY_SITES = 5
SUMMARY_HOLDERS = 3

_KIND_NOTE = {
    "reachable": "",
    "cyclic-garbage": " cyclic-garbage",
    "native": " native",
}


def _one_line(text: str) -> str:
    """Paths and reprs come from user code; a CI line must stay one line."""
    return text.replace("\r", " ").replace("\n", " ")


def first_growing_site(run: Run) -> Site | None:
    return next((s for s in run.sites if s.growing), None)


def first_growing_holder(run: Run) -> Holder | None:
    return next((h for h in run.holders if h.growing), None)


def where(run: Run) -> str:
    """The line to open first and the container that grows: ``file:line (holder.path)``."""
    return _where(displayed(run))


def _where(run: Run) -> str:
    site = first_growing_site(run)
    holder = first_growing_holder(run)
    location = None
    if site is not None:
        frame = site.user_frame
        location = site_location(frame.file, frame.line) if frame else site_location(
            site.file, site.line)
    elif holder is not None and holder.grown_at:
        location = short_location(holder.grown_at)
    if location and holder is not None:
        return f"{location} ({holder.path})"
    if location:
        return location
    if holder is not None:
        return holder.path
    if run.verdict is not None and run.verdict.kind == "native":
        return f"outside the Python heap ({run.target})"
    return f"({run.target})"


def ci_line(run: Run, max_growth_bytes: int, failed: bool | None = None) -> str:
    """One line for a CI log, e.g. ``leakscope: LEAK 1.4 KiB/iter, app/x.py:41 (app.x.cache)``.

    ``failed`` is the budget decision when the caller already made it (it is
    ``budget.exceeds``); the line only states it, it never decides.
    """
    from leakscope.analysis.budget import exceeds

    run = displayed(run)
    verdict = run.verdict
    if verdict is None:
        return f"leakscope: NO VERDICT ({run.target})"
    if failed is None:
        failed = exceeds(verdict, max_growth_bytes)
    unit = short_unit(run.unit)
    rate = verdict.rate(unit)
    partial = " (partial run)" if verdict.partial else ""
    if verdict.undecided:
        more = verdict.evidence.get("needs_units")
        return _one_line(f"leakscope: UNDECIDED, not called a leak{partial}: run about "
                         f"{more} more {unit}s to tell ({run.target})")
    if not verdict.leak:
        return _one_line(f"leakscope: OK no leak{partial} ({run.target})")
    kind = _KIND_NOTE.get(verdict.kind, f" {verdict.kind}")
    if failed:
        return _one_line(f"leakscope: LEAK {rate}{kind}{partial}, {_where(run)}")
    budget = f"{format_bytes(max_growth_bytes)}/{unit}"
    return _one_line(
        f"leakscope: OK leak of {rate}{kind} within the {budget} budget{partial}, {_where(run)}"
    )


def short_summary(run: Run, max_sites: int = SUMMARY_SITES) -> str:
    """The verdict sentence, the growing containers and sites, the counts and the projection."""
    run = displayed(run)
    verdict = run.verdict
    if verdict is None:
        return f"{run.target}: the run has no verdict"
    unit = short_unit(run.unit)
    lines = [verdict.summary]
    holders = [h for h in run.holders if h.growing][:SUMMARY_HOLDERS]
    if holders:
        lines.append("growing containers:")
        for holder in holders:
            items = format_count(holder.items_per_iteration)
            added = f", added at {short_location(holder.grown_at)}" if holder.grown_at else ""
            lines.append(
                f"  {holder.path} ({holder.type}, {holder.role}): +{items} items/{unit}, "
                f"{holder.items_first:,} -> {holder.items_last:,}{added}"
            )
    sites = [s for s in run.sites if s.growing][:max_sites]
    if sites:
        lines.append("growing allocation sites:")
        lines.extend(
            f"  {_site(site, unit, f', {format_bytes(site.kept_bytes)} kept')}" for site in sites
        )
    measured = len(run.measured)
    traced = sum(1 for loop in run.measured if loop.traced_bytes is not None)
    mode = f"{run.mode} mode" + (f", {traced} traced" if run.mode == "fast" else "")
    lines.append(
        f"{measured} measured + {len(run.loops) - measured} warm-up {run.unit}s ({mode}), "
        f"kind {verdict.kind}, confidence {verdict.confidence:.2f}"
    )
    if verdict.leak and verdict.projection:
        lines.append(verdict.projection)
    return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _state(run: Run) -> str:
    verdict = run.verdict
    if verdict is None:
        return "no verdict"
    if not verdict.leak:
        return "no leak"
    return f"LEAK ({verdict.kind}, {verdict.rate(short_unit(run.unit))})"


def comparison_text(comparison: Comparison) -> str:
    """What ``leakscope diff`` prints: the headline first, then what is new, gone and moved."""
    comparison = displayed(comparison)
    unit = short_unit(comparison.new.unit)
    change = comparison.rate_change
    sign = "+" if change > 0 else ""
    rates = (
        f"rate {format_bytes(comparison.base_rate)}/{unit} -> "
        f"{format_bytes(comparison.new_rate)}/{unit} ({sign}{format_bytes(change)}/{unit})"
    )
    sites, holders = comparison.new_sites, comparison.new_holders
    if sites or holders:
        counts = ((len(sites), "site"), (len(holders), "container"))
        parts = [_plural(count, noun) for count, noun in counts if count]
        head = f"NEW grows {' and '.join(parts)} that BASE did not"
    elif comparison.newly_leaking:
        assert comparison.new.verdict is not None
        head = f"NEW leaks ({comparison.new.verdict.kind}) and BASE did not"
    else:
        head = "nothing grows in NEW that did not in BASE"
    lines = [
        _one_line(f"leakscope diff: {head}; {rates}"),
        f"BASE: {comparison.base.target} · {_state(comparison.base)}",
        f"NEW:  {comparison.new.target} · {_state(comparison.new)}",
    ]
    if holders:
        lines.append("new growing containers:")
        for holder in holders:
            lines.append(
                f"  {holder.path} ({holder.type}, {holder.role}): "
                f"+{format_count(holder.items_per_iteration)} items/{unit}"
            )
    if sites:
        lines.append("new growing allocation sites:")
        lines.extend(f"  {_site(site, unit)}" for site in sites)
    moved = [(b, n) for b, n in comparison.common_sites
             if n.bytes_per_iteration != b.bytes_per_iteration]
    if moved:
        lines.append("growing in both:")
        for base, new in moved:
            delta = new.bytes_per_iteration - base.bytes_per_iteration
            lines.append(
                f"  {site_location(new.file, new.line)} {new.function}: "
                f"{format_bytes(base.bytes_per_iteration)}/{unit} -> "
                f"{format_bytes(new.bytes_per_iteration)}/{unit} "
                f"({'+' if delta > 0 else ''}{format_bytes(delta)}/{unit})"
            )
    if comparison.gone_sites or comparison.gone_holders:
        lines.append("no longer growing:")
        lines.extend(f"  {h.path} ({h.type})" for h in comparison.gone_holders)
        lines.extend(f"  {_site(site, unit)}" for site in comparison.gone_sites)
    return "\n".join(lines)


def _site(site: Site, unit: str, extra: str = "") -> str:
    frame = site.user_frame
    first = ""
    if frame is not None and (frame.file, frame.line) != (site.file, site.line):
        first = f" (open {site_location(frame.file, frame.line)} first)"
    native = ""
    if site.native:
        native = (f", native {site.native.get('function', '?')} "
                  f"({site.native.get('library', '<unknown>')}) by {site.engine}")
    return (f"{site_location(site.file, site.line)} {site.function}: "
            f"{format_bytes(site.bytes_per_iteration)}/{unit}{extra}{native}{first}")


class CheckText:
    """What ``check`` prints for one target it judged: the CI line, then the short summary."""

    def render(self, decision: Decision, /) -> str:
        run = decision.run
        if run is None:  # the worker failed: the CLI has printed its error line
            return ""
        line = ci_line(run, decision.max_growth_bytes, decision.failed)
        return f"{line}\n{short_summary(run)}"


class ComparisonText:
    """What ``leakscope diff`` prints (``comparison_text``)."""

    def render(self, comparison: Comparison, /) -> str:
        return comparison_text(comparison)
