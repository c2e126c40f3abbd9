"""The sentences a person reads: the summary, holders and native sites described."""

from __future__ import annotations

import math

from leakscope.model.runfile import Holder, Run, Site, Verdict
from leakscope.model.units import format_bytes, format_count, short_unit


def ended_by(run: Run) -> str:
    """Why the run stopped before its last loop ("" when it did not)."""
    if run.observations.get("interrupted"):
        return "interrupted"
    ended = run.observations.get("ended")
    return ended if isinstance(ended, str) else ""


def partial_prefix(verdict: Verdict, run: Run) -> str:
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
    prefix = partial_prefix(verdict, run)
    if verdict.summary and not verdict.leak:
        return prefix + verdict.summary
    if not verdict.leak:
        return prefix + (
            f"No leak: memory kept per {unit} does not keep growing "
            f"(confidence {verdict.confidence:.2f})."
        )
    rate = verdict.rate(short_unit(unit))
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
    if verdict.evidence.get("outside_malloc"):
        kinds["native"] = ("outside the Python heap and outside malloc (memory mapped by native "
                           "code: mmap, CPython's arenas), seen in RSS")
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


def describe_untraced(verdict: Verdict, run: Run) -> str:
    """A watched process that grew but was never traced: the counters' word, no lines."""
    unit = run.unit
    if verdict.kind == "native":
        rate = f"{format_bytes(verdict.bytes_per_iteration)} of malloc"
        if verdict.evidence.get("outside_malloc"):
            rate = f"{format_bytes(verdict.bytes_per_iteration)} of RSS outside malloc"
    else:
        rate = f"{format_count(verdict.blocks_per_iteration)} allocated blocks"
    if run.process is None:  # `trace` or `check` in fast mode, ended before locating
        return partial_prefix(verdict, run) + (
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


def bounded_summary(bounded: dict, byte_rate: float, loops: int, unit: str) -> str:
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
