"""The HTML report: a plain view model of a Run, rendered into one self-contained page.

Everything the page shows comes from ``view_model(run)``: dicts and lists of
primitives that enter the page once, through Jinja's ``|tojson`` inside a
``<script type="application/json">`` block (tojson escapes ``<``, ``>``, ``&``
and ``'``, so no run string can close that block). The hand-written script
builds the DOM from it with ``textContent`` only. The CSS and JS are inlined
and pinned by hash in a Content-Security-Policy, so the page needs no network
and runs no script but its own, even if a string slipped through.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import statistics
import tokenize
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from leakscope import __version__
from leakscope.model.atomic import SHARED
from leakscope.model.runfile import Frame, Holder, Loop, Run, Site, Verdict
from leakscope.model.units import format_bytes, format_count, short_unit
from leakscope.render.base import write_output
from leakscope.render.paths import short_location, short_path
from leakscope.render.safe import displayed

# Chart points kept in the page: a 10,000-loop run thins to this many, keeping
# each bucket's extremes so spikes and floors survive (a line is ~1000 px wide).
CHART_POINTS = 1000
# Sparkline points per site or container (analysis already thins site series to 200).
SPARK_POINTS = 200
# Source lines shown either side of a site's user frame.
SOURCE_CONTEXT = 5
# Larger files are not opened for a snippet: a traced frame is a Python file,
# and a run file must not make the renderer read (or embed) big or odd files.
SOURCE_MAX_BYTES = 2 * 1024 * 1024
SOURCE_SUFFIXES = (".py", ".pyw")
# Source lines longer than this are cut: one minified line must not bloat the page.
SOURCE_LINE_CHARS = 400

_KIND_TITLE = {
    "reachable": "Leak: still reachable",
    "cyclic-garbage": "Leak: cyclic garbage",
    "native": "Leak: native memory",
}


# ------------------------------------------------------------------ templates


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The one Environment: package templates, autoescape on, compact tojson."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("leakscope", "render/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    # The data block is machine-read; compact separators keep big runs small.
    # allow_nan=False: JSON.parse rejects NaN, so view_model must never emit one.
    env.policies["json.dumps_kwargs"] = {
        "sort_keys": False, "separators": (",", ":"), "allow_nan": False,
    }
    return env


def _asset(name: str) -> str:
    env = _environment()
    assert env.loader is not None
    source, _, _ = env.loader.get_source(env, name)
    return source


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


# ----------------------------------------------------------------- view model


def _number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN and infinities (and non-numbers) become null."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _rate(value: float | None, short: str) -> str:
    number = _number(value)
    return "-" if number is None else f"{format_bytes(number)}/{short}"


def _verdict(verdict: Verdict | None, run: Run) -> dict[str, Any] | None:
    if verdict is None:
        return None
    short = short_unit(run.unit)
    if verdict.leak:
        title = _KIND_TITLE.get(verdict.kind, f"Leak: {verdict.kind}")
    elif verdict.undecided:
        title = "Undecided"
    else:
        title = "No leak"
    evidence = [[str(key), _text(value)] for key, value in verdict.evidence.items()]
    return {
        "leak": verdict.leak,
        "undecided": verdict.undecided,
        "kind": verdict.kind,
        "title": title,
        "summary": verdict.summary,
        "partial": verdict.partial,
        "rate": _rate(verdict.bytes_per_iteration, short),
        "blocks": f"{format_count(_number(verdict.blocks_per_iteration) or 0)} blocks/{short}",
        "confidence": (
            f"{verdict.confidence:.2f}" if _number(verdict.confidence) is not None else "-"
        ),
        "projection": verdict.projection,
        "iterations_to_limit": _number(verdict.iterations_to_limit),
        "memory_limit": (
            format_bytes(verdict.memory_limit_bytes) if verdict.memory_limit_bytes else None
        ),
        "evidence": evidence,
    }


def _thin_indices(count: int, series: Sequence[Sequence[float | None]], points: int) -> list[int]:
    """Indices to keep so that at most ``points`` remain, with each bucket's extremes.

    Stride sampling would drop the spike or the floor a person is looking for;
    keeping the minimum and maximum of every series in each bucket keeps both.
    """
    if count <= points:
        return list(range(count))
    per_bucket = 2 * max(1, len(series))
    buckets = max(1, (points - 2) // per_bucket)
    keep: set[int] = {0, count - 1}
    for b in range(buckets):
        start = b * count // buckets
        stop = max(start + 1, (b + 1) * count // buckets)
        for values in series:
            present = [(i, v) for i in range(start, stop) if (v := values[i]) is not None]
            if not present:
                keep.add(start)
                continue
            keep.add(min(present, key=lambda point: point[1])[0])
            keep.add(max(present, key=lambda point: point[1])[0])
    return sorted(keep)


def _spark(values: Sequence[Any]) -> list[float | int | None]:
    numbers = [_number(v) for v in values]
    return [numbers[i] for i in _thin_indices(len(numbers), [numbers], SPARK_POINTS)]


def _fit(
    loops: Sequence[Loop], name: str, slope: float | None, label: str, phases: tuple[str, ...]
) -> dict[str, Any] | None:
    """The verdict's growth line, anchored on the series the verdict read.

    The slope is the verdict's own rate (nothing is re-decided here); only the
    intercept is placed, as the median residual, so the line sits on the data.
    """
    if slope is None or _number(slope) is None:
        return None
    points = [
        (loop.index, getattr(loop, name)) for loop in _longest_stretch(loops, phases)
        if not loop.warmup and _number(getattr(loop, name)) is not None
    ]
    if len(points) < 2:
        return None
    slope = float(slope)
    intercept = statistics.median(y - slope * x for x, y in points)
    x0, x1 = points[0][0], points[-1][0]
    return {
        "series": _SERIES[name][0],
        "x0": x0, "y0": _number(intercept + slope * x0),
        "x1": x1, "y1": _number(intercept + slope * x1),
        "label": label,
    }


def _longest_stretch(loops: Sequence[Loop], phases: tuple[str, ...]) -> Sequence[Loop]:
    """The longest run of consecutive loops in ``phases`` (all loops when none are given).

    A watched worker's counters step when its traced window starts and ends;
    the rule reads one side of it, so the line is anchored on one side too.
    """
    if not phases:
        return loops
    best: list[Loop] = []
    current: list[Loop] = []
    for loop in loops:
        if loop.phase in phases:
            current.append(loop)
            if len(current) > len(best):
                best = current
        else:
            current = []
    return best


# Loop field -> (chart key, panel title, axis format).
_SERIES = {
    "traced_bytes": ("traced", "traced bytes", "bytes"),
    "allocated_blocks": ("blocks", "allocated blocks (untraced)", "count"),
    "malloc_bytes": ("malloc", "malloc in use (untraced)", "bytes"),
    "rss_bytes": ("rss", "RSS", "bytes"),
}
# Fast mode reads its counters on these loops only: a traced loop's counters
# carry tracemalloc's own tables, a step that is not the worker's.
_COUNTER_PHASES = ("warmup", "detect")


def _fast_counters(run: Run) -> bool:
    """True when the verdict was decided on the cheap counters, not on traced bytes."""
    return run.mode == "fast" and any(
        loop.phase == "detect" and loop.allocated_blocks is not None for loop in run.loops
    )


def _chart(run: Run) -> dict[str, Any]:
    """The series the verdict read, over the whole run, then RSS.

    Full mode decides on traced bytes. Fast mode decides on the counters of
    its untraced loops (allocated blocks, malloc's in-use bytes) and traces
    only a few loops at the end, so its chart shows the counters: traced
    bytes would be a few points squeezed at the right edge.
    """
    loops = run.loops
    verdict = run.verdict
    short = short_unit(run.unit)
    fast = _fast_counters(run)
    if not fast:
        names = ["traced_bytes", "rss_bytes"]
    elif verdict is not None and verdict.evidence.get("outside_malloc"):
        names = ["rss_bytes", "malloc_bytes", "allocated_blocks"]  # mapped outside malloc
    elif verdict is not None and verdict.kind == "native":
        names = ["malloc_bytes", "allocated_blocks", "rss_bytes"]  # the verdict read malloc
    else:
        names = ["allocated_blocks", "malloc_bytes", "rss_bytes"]
    values: dict[str, list[float | int | None]] = {}
    for name in names:
        counter = fast and name != "rss_bytes"
        values[name] = [
            _number(getattr(loop, name)) if not counter or loop.phase in _COUNTER_PHASES
            else None
            for loop in loops
        ]
    if fast and not any(v is not None for v in values["malloc_bytes"]):
        del values["malloc_bytes"]
    keep = _thin_indices(len(loops), list(values.values()), CHART_POINTS)
    measured = [loop.index for loop in loops if not loop.warmup]
    warmup = [loop.index for loop in loops if loop.warmup]
    traced = [loop.index for loop in loops if fast and loop.traced_bytes is not None]
    fit = None
    if verdict is not None:
        # The counters' own rates, as the decision measured them; the verdict's
        # blocks and bytes per loop come from the traced loops instead.
        counted = verdict.evidence
        if fast and verdict.kind != "native":
            rate = _number(counted.get("blocks_rate"))
            rate = verdict.blocks_per_iteration if rate is None else rate
            fit = _fit(loops, "allocated_blocks", rate,
                       f"{format_count(rate)} blocks/{short}", ("detect",))
        elif fast and counted.get("outside_malloc"):
            rate = _number(counted.get("outside_malloc_rate"))
            rate = verdict.bytes_per_iteration if rate is None else rate
            fit = _fit(loops, "rss_bytes", rate, _rate(rate, short), ("detect",))
        elif fast and "malloc_bytes" in values:
            rate = _number(counted.get("malloc_rate"))
            rate = verdict.bytes_per_iteration if rate is None else rate
            fit = _fit(loops, "malloc_bytes", rate, _rate(rate, short), ("detect",))
        elif not fast:
            name = "rss_bytes" if verdict.kind == "native" else "traced_bytes"
            fit = _fit(loops, name, verdict.bytes_per_iteration,
                       _rate(verdict.bytes_per_iteration, short), ())
    chart: dict[str, Any] = {
        "x": [loops[i].index for i in keep],
        "panels": [
            {"key": _SERIES[name][0], "title": _SERIES[name][1], "format": _SERIES[name][2]}
            for name in values
        ],
        "loops": len(loops),
        "thinned": len(keep) < len(loops),
        "warmup": [warmup[0], warmup[-1]] if warmup else None,
        "first_measured": measured[0] if measured else None,
        # Fast mode: the loops that were traced to locate the growth, shaded.
        "traced_range": [traced[0], traced[-1]] if traced else None,
        "fit": fit,
    }
    for name, series in values.items():
        chart[_SERIES[name][0]] = [series[i] for i in keep]
    return chart


def _read_source(path: str) -> tuple[str, ...] | None:
    """The lines of a readable Python file, or None; never raises."""
    candidate = Path(path)
    try:
        if candidate.suffix not in SOURCE_SUFFIXES or not candidate.is_file():
            return None
        if candidate.stat().st_size > SOURCE_MAX_BYTES:
            return None
        # tokenize.open honours the file's coding cookie, as Python itself would.
        with tokenize.open(candidate) as handle:
            return tuple(line.rstrip("\r\n") for line in handle)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def run_tree(run_path: str | os.PathLike[str]) -> Path:
    """The directory tree a saved run may show source from: where its run file lies.

    That is the run file's own directory, or, for a file leakscope saved in
    its ``.leakscope/`` (or ``.leakscope/check/``) directory, the project
    directory that holds it, where the traced code lives. The run's recorded
    cwd is not trusted for this: it is only a string in the file.
    """
    directory = Path(os.path.abspath(run_path)).parent
    for level in (directory, directory.parent):
        if level.name == ".leakscope":
            return level.parent
    return directory


def _inside(path: Path, roots: Sequence[Path]) -> Path | None:
    """``path`` with symlinks resolved, if it lies under one of ``roots``; else None."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        return None
    return real if any(real.is_relative_to(root) for root in roots) else None


def _source_path(frame: Frame, cwd: str | None, roots: Sequence[Path]) -> Path | None:
    """Where a frame's file is, if it is under one of ``roots``: never through ``..`` or a
    symlink out of them. Relative names are from the run's cwd, or from a root."""
    name = Path(frame.file)
    if ".." in name.parts:
        return None
    if name.is_absolute():
        return _inside(name, roots)
    bases = [Path(cwd)] if cwd and Path(cwd).is_absolute() else []
    for base in (*bases, *roots):
        found = _inside(base / name, roots)
        if found is not None and found.is_file():
            return found
    return None


def _source(
    frame: Frame | None, cwd: str | None, roots: Sequence[Path],
    files: dict[str, tuple[str, ...] | None],
) -> dict[str, Any] | None:
    """Up to SOURCE_CONTEXT lines either side of the user frame, when its file is readable
    and lies in the run's own tree (``roots``; none embeds no source at all)."""
    if not roots or frame is None or not frame.file:
        return None
    if not isinstance(frame.line, int) or frame.line < 1:
        return None
    path = _source_path(frame, cwd, roots)
    if path is None:
        return None
    # Read each file once per report (sites share files), and afresh for the next report.
    if str(path) not in files:
        files[str(path)] = _read_source(str(path))
    lines = files[str(path)]
    if not lines or frame.line > len(lines):
        return None
    start = max(1, frame.line - SOURCE_CONTEXT)
    stop = min(len(lines), frame.line + SOURCE_CONTEXT)
    return {
        "start": start,
        "line": frame.line,
        "lines": [text[:SOURCE_LINE_CHARS] for text in lines[start - 1 : stop]],
    }


def _frame(frame: Frame) -> dict[str, Any]:
    # "file" as recorded (the source snippet reads it), "short" as the terminal shows it.
    return {"file": frame.file, "short": short_path(frame.file), "line": frame.line,
            "function": frame.function}


def _same(a: Frame, b: Frame | None) -> bool:
    return b is not None and (a.file, a.line, a.function) == (b.file, b.line, b.function)


def _site(
    site: Site, short: str, cwd: str | None, roots: Sequence[Path],
    files: dict[str, tuple[str, ...] | None],
) -> dict[str, Any]:
    user = site.user_frame
    traceback = []
    marked = False
    for frame in site.traceback:
        is_user = not marked and _same(frame, user)
        marked = marked or is_user
        traceback.append({**_frame(frame), "user": is_user})
    return {
        "file": site.file,
        "short": short_path(site.file),
        "line": site.line,
        "function": site.function,
        "rate": _rate(site.bytes_per_iteration, short),
        "blocks": f"{format_count(_number(site.blocks_per_iteration) or 0)} blocks/{short}",
        "kept": format_bytes(_number(site.kept_bytes) or 0),
        "growing": site.growing,
        "holder": site.holder,
        "series": _spark(site.series),
        "traceback": traceback,
        "user_frame": _frame(user) if user is not None else None,
        "source": _source(user, cwd, roots, files),
        "engine": site.engine,
        "native": dict(site.native) if site.native else None,
    }


def _per(count: Any, noun: str, short: str) -> str:
    text = format_count(_number(count) or 0)
    return f"{text} {noun}{'' if text == '1' else 's'}/{short}"


def _holder(holder: Holder, short: str) -> dict[str, Any]:
    # getattr: runs written before these fields existed load without them.
    noun = getattr(holder, "item_noun", "") or "item"
    stack = getattr(holder, "grown_at_stack", None) or []
    return {
        "path": holder.path,
        "type": holder.type,
        "role": holder.role,
        "items_first": _number(holder.items_first),
        "items_last": _number(holder.items_last),
        "growth": _per(holder.items_per_iteration, noun, short),
        "item_types": [[str(name), _number(count)] for name, count in holder.item_types.items()],
        "defined_at": [short_location(d) for d in holder.callables_defined_at],
        "made_at": [short_location(m) for m in holder.items_made_at
                    if m not in holder.callables_defined_at],
        "grown_at": short_location(holder.grown_at) if holder.grown_at else holder.grown_at,
        "grown_at_stack": [
            short_location(f"{entry[0]}:{entry[1]}") for entry in stack
            if isinstance(entry, (list, tuple)) and len(entry) >= 2
        ],
        "keys_sample": [str(key) for key in getattr(holder, "keys_sample", None) or []],
        "bound": _number(holder.bound),
        "growing": holder.growing,
        "series": _spark(holder.items_series),
    }


def _loops(run: Run) -> dict[str, Any]:
    """Every measured loop's file:line deltas, compactly.

    A 10,000-loop run has up to 100,000 deltas; as objects with repeated file
    names that is tens of MB, so files go in a table and each loop's deltas
    are one flat array ``[file, line, size_diff, count_diff, file, ...]``.
    """
    files: dict[str, int] = {}
    index, net, traced, blocks, top = [], [], [], [], []
    # Per-line diffs run on a time budget: one may cover several loops
    # (collector.DiffSchedule). Each loop of such a span, the diffed one
    # included, carries [first, last] of it; a loop diffed alone, null.
    span_of: dict[int, list[int]] = {}
    for loop in run.loops:
        if not loop.warmup and loop.span_from is not None:
            for inside in range(loop.span_from, loop.index + 1):
                span_of[inside] = [loop.span_from, loop.index]
    spans: list[list[int] | None] = []
    for loop in run.loops:
        if loop.warmup:
            continue
        flat: list[Any] = []
        for delta in loop.top:
            flat += [files.setdefault(short_path(delta.file), len(files)), _number(delta.line),
                     _number(delta.size_diff), _number(delta.count_diff)]
        index.append(loop.index)
        net.append(_number(loop.net_bytes))
        traced.append(_number(loop.traced_bytes))
        blocks.append(_number(loop.traced_blocks))
        top.append(flat)
        spans.append(span_of.get(loop.index))
    # Open on the last loop that was traced: a watched worker's last units have
    # counters only, and "no net figure" is no place to start.
    with_net = [pos for pos, value in enumerate(net) if value is not None]
    with_lines = [pos for pos in with_net if top[pos]]
    opened = (with_lines or with_net or [len(index) - 1])[-1]
    return {"files": list(files), "index": index, "net": net, "traced": traced,
            "blocks": blocks, "top": top, "span": spans, "open": max(opened, 0)}


def _site_groups(sites: Sequence[Site]) -> list[dict[str, Any]]:
    """Which sites the page lists under which title: growing ones apart from the rest.

    A steady site under "Growing allocation sites" would read as part of the leak.
    """
    growing = [i for i, site in enumerate(sites) if site.growing]
    others = [i for i, site in enumerate(sites) if not site.growing]
    if not growing:
        return [{"title": "Largest kept sites", "sites": others}] if others else []
    groups = [{"title": "Growing allocation sites", "sites": growing}]
    if others:
        groups.append({"title": "Kept, not growing", "sites": others})
    return groups


def _bounded(run: Run) -> list[dict[str, Any]]:
    """Bounded containers still filling or full, as the terminal lists them: a verdict
    that names a filling cache must find it on the page too."""
    rows = []
    for entry in run.bounded:
        if not isinstance(entry, dict) or not (entry.get("filling") or entry.get("full")):
            continue
        series = entry.get("items_series")
        rows.append({
            "path": _text(entry.get("path", "-")),
            "type": _text(entry.get("type", "-")),
            "state": "full" if entry.get("full") else "filling",
            "items": _number(entry.get("items")),
            "bound": _number(entry.get("bound")),
            "series": _spark(series) if isinstance(series, list) else [],
        })
    return rows


def _run_facts(run: Run) -> list[list[str]]:
    return [
        ["target", run.target],
        ["python", run.python],
        ["started", run.started_at],
        ["finished", run.finished_at or "-"],
        ["platform", run.platform or "-"],
        ["mode", run.mode],
        ["unit", run.unit],
        ["leakscope", run.leakscope_version or "-"],
        ["directory", _text(run.observations.get("cwd", "-"))],
    ]


def _settings(run: Run) -> list[list[str]]:
    return [[str(key), _text(value)] for key, value in run.settings.items()]


def _processes(run: Run) -> list[dict[str, Any]]:
    rows = []
    for child in run.processes:
        info = child.process or {}
        verdict = child.verdict
        rows.append({
            "pid": _text(info.get("pid", "-")),
            "parent": _text(info.get("parent_pid", "-")),
            "role": _text(info.get("role", "-")),
            "command": _text(info.get("command", "-")),
            "leak": bool(verdict and verdict.leak),
            "units": f"{len(child.measured):,} + {len(child.loops) - len(child.measured):,} "
                     f"warm-up {child.unit}s",
            "summary": verdict.summary if verdict else "no verdict",
        })
    return rows


def _advice(run: Run) -> list[str]:
    advice = run.observations.get("advice")
    return [_text(line) for line in advice] if isinstance(advice, list) else []


def view_model(run: Run, source_roots: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """Everything the page shows, as JSON-ready primitives, with nothing left to compute.

    Source lines are embedded only from files under ``source_roots`` (for a
    saved run, ``run_tree`` of its file; for a run made just now, the cwd and
    the target's directory): a run file must not make the page carry any
    other file's lines.
    """
    run = displayed(run)
    roots = [Path(root).resolve() for root in source_roots]
    short = short_unit(run.unit)
    cwd = run.observations.get("cwd")
    cwd = cwd if isinstance(cwd, str) else None
    measured = run.measured
    files: dict[str, tuple[str, ...] | None] = {}
    return {
        "meta": {
            "target": run.target,
            "python": run.python,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "platform": run.platform,
            "mode": run.mode,
            "unit": run.unit,
            "unit_short": short,
            "version": run.leakscope_version or __version__,
            "measured": len(measured),
            "traced": sum(1 for loop in measured if loop.traced_bytes is not None),
            "warmup": len(run.loops) - len(measured),
            "holders_searched": bool(run.settings.get("holders", True)),
        },
        "verdict": _verdict(run.verdict, run),
        "chart": _chart(run),
        "sites": [_site(site, short, cwd, roots, files) for site in run.sites],
        "site_groups": _site_groups(run.sites),
        "holders": [_holder(holder, short) for holder in run.holders],
        "bounded": _bounded(run),
        "loops": _loops(run),
        "run": _run_facts(run),
        "settings": _settings(run),
        "processes": _processes(run),
        "advice": _advice(run),
    }


# ----------------------------------------------------------------- rendering


def render_html(run: Run, source_roots: Sequence[str | os.PathLike[str]] = ()) -> str:
    """The whole report as one HTML document that needs no network to view."""
    css = _asset("report.css")
    js = _asset("report.js")
    # The assets are ours and trusted; the run's data only ever enters through tojson.
    return _environment().get_template("report.html.j2").render(
        data=view_model(run, source_roots),
        css=Markup(css),
        js=Markup(js),
        csp=(
            "default-src 'none'; img-src data:; "
            f"style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
            "base-uri 'none'; form-action 'none'"
        ),
    )


class HtmlRenderer:
    """The report page of a run; source files are read only under ``source_roots``."""

    what = "HTML report"
    mode: int | None = SHARED  # a report is meant to be passed around, as any file would be

    def __init__(self, source_roots: Sequence[str | os.PathLike[str]] = ()) -> None:
        self.source_roots = source_roots

    def render(self, run: Run, /) -> str:
        return render_html(run, self.source_roots)


def write_html(
    run: Run, path: str | os.PathLike[str], source_roots: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write the report atomically and return its path; an unwritable path is a LeakscopeError."""
    return write_output(HtmlRenderer(source_roots), run, path)
