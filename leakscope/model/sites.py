"""Raw tracemalloc traces to per-line totals and diffs, and lines to named sites.

The collector calls ``aggregate`` on the raw trace list for each per-line
diff. It is one pass over the traces of the measured window only
(tracemalloc starts after warm-up), so its cost follows what the window
kept, not the heap; the collector's DiffSchedule decides how often it runs.
"""

from __future__ import annotations

import ast
import os
import sys
import sysconfig
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import leakscope

LineKey = tuple[str, int]
# Allocations above this size go to the C allocator (pymalloc's small-object
# threshold); they show in malloc's counters as well as in tracemalloc's.
SMALL_REQUEST_THRESHOLD = 512

_LEAKSCOPE_DIR = os.path.dirname(os.path.abspath(leakscope.__file__)) + os.sep
# Every path leakscope's modules may carry: the measured process imports them
# through a private link (leakscope.drive.interpreter), the tool from where it lives.
_OWN_DIRS: tuple[str, ...] = (_LEAKSCOPE_DIR,)
_TRACEMALLOC_FILE = tracemalloc.__file__


@dataclass
class LineTotals:
    """What every file:line holds in the traced window at one moment."""

    by_line: dict[LineKey, list[int]] = field(default_factory=dict)  # [bytes, blocks]
    total_bytes: int = 0
    total_blocks: int = 0
    # Bytes in allocations that came from the C allocator, so that native
    # growth can be told from Python growth in malloc's own counter.
    malloc_bytes: int = 0
    # Every live trace, leakscope's own included: tracemalloc pays for each.
    all_blocks: int = 0
    # Bytes left out of the totals (leakscope's own, and traces with no frame),
    # read from the same traces: the traced total minus this is the worker's
    # total at that moment, whatever other threads did since.
    other_bytes: int = 0


class OwnFilter:
    """Decides whether a trace is leakscope's own allocation.

    Our series, messages and tracemalloc's snapshot tuples are allocated
    either directly in leakscope (or tracemalloc.py) or in the standard
    library called by leakscope (json, selectors). Walking from the innermost
    frame, library frames are skipped and the first other frame decides: a
    leakscope frame means ours, anything else is the worker's, so a worker's
    own ``json.dumps`` still counts.
    """

    def __init__(self) -> None:
        self._files: dict[str, int] = {}

    def _classify(self, filename: str) -> int:
        kind = self._files.get(filename)
        if kind is None:
            if filename == _TRACEMALLOC_FILE or filename.startswith(_OWN_DIRS):
                kind = _OWN
            elif is_user_file(filename):
                kind = _USER
            else:
                kind = _LIBRARY
            self._files[filename] = kind
        return kind

    def __call__(self, frames: tuple) -> bool:
        for filename, _ in frames:
            kind = self._classify(filename)
            if kind != _LIBRARY:
                return kind == _OWN
        return False


_OWN, _USER, _LIBRARY = 0, 1, 2


def aggregate(traces: Sequence[tuple], is_own: OwnFilter) -> LineTotals:
    """Sum raw traces ``(domain, size, traceback, nframe)`` by innermost line.

    This is the per-loop hot path, and it runs while tracemalloc records
    every allocation, where a new int costs microseconds: so it makes almost
    none. Sizes are gathered into one list per line (amortised appends) and
    summed by ``sum()``, which accumulates in C without intermediate ints;
    the own-allocation test is a dict lookup on the innermost file, with the
    frame walk only for library frames, once per distinct stack.
    """
    groups: dict[tuple[str, int], list[int]] = {}
    get_group = groups.get
    large: list[int] = []
    left_out: list[int] = []
    file_kind = is_own._files.get
    classify = is_own._classify
    # One traceback tuple is shared by every trace made on that stack (the
    # snapshot converts each once), so the frame walk runs once per stack.
    decided: dict[tuple, bool] = {}
    decided_get = decided.get
    for domain, size, frames, _ in traces:
        # Large blocks sit in malloc whoever owns them, leakscope included.
        if size > SMALL_REQUEST_THRESHOLD or domain != 0:
            large.append(size)
        if not frames:
            left_out.append(size)
            continue
        key = frames[0]
        kind = file_kind(key[0])
        if kind is None:
            kind = classify(key[0])
        if kind == _LIBRARY:
            own = decided_get(frames)
            if own is None:
                own = decided[frames] = is_own(frames)
            if own:
                left_out.append(size)
                continue
        elif kind == _OWN:
            left_out.append(size)
            continue
        sizes = get_group(key)
        if sizes is None:
            groups[key] = [size]
        else:
            sizes.append(size)
    totals = LineTotals()
    by_line = totals.by_line
    for key, sizes in groups.items():
        by_line[key] = [sum(sizes), len(sizes)]
    totals.total_bytes = sum(entry[0] for entry in by_line.values())
    totals.total_blocks = sum(entry[1] for entry in by_line.values())
    totals.malloc_bytes = sum(large)
    totals.all_blocks = len(traces)
    totals.other_bytes = sum(left_out)
    return totals


def diff(before: LineTotals, after: LineTotals) -> list[tuple[str, int, int, int]]:
    """Lines whose kept memory changed: ``(file, line, size_diff, count_diff)``."""
    changes = []
    old = before.by_line
    for key, (size, count) in after.by_line.items():
        prev = old.get(key)
        if prev is None:
            changes.append((key[0], key[1], size, count))
        elif prev[0] != size or prev[1] != count:
            changes.append((key[0], key[1], size - prev[0], count - prev[1]))
    new = after.by_line
    for key, (size, count) in old.items():
        if key not in new:
            changes.append((key[0], key[1], -size, -count))
    return changes


def aggregate_with_tracebacks(
    traces: Sequence[tuple], is_own: OwnFilter, limit: int
) -> tuple[LineTotals, dict[LineKey, list[LineKey]]]:
    """``aggregate``'s totals and, for the ``limit`` biggest lines, the traceback that
    kept most bytes there, in one pass (the run's end needs both, of every trace).

    Frames are innermost first, as in the run file. Sizes are gathered per
    stack first (one list append a trace, no new int while tracemalloc
    records), then the ownership test and the sums run once per stack.
    """
    per_stack: dict[tuple, list[int]] = {}
    get_stack = per_stack.get
    large: list[int] = []
    left_out: list[int] = []
    for domain, size, frames, _ in traces:
        if size > SMALL_REQUEST_THRESHOLD or domain != 0:
            large.append(size)
        if not frames:
            left_out.append(size)
            continue
        sizes = get_stack(frames)
        if sizes is None:
            per_stack[frames] = [size]
        else:
            sizes.append(size)
    totals = LineTotals()
    by_line = totals.by_line
    best: dict[LineKey, tuple[int, tuple]] = {}
    other = sum(left_out)
    for frames, sizes in per_stack.items():
        size = sum(sizes)
        if is_own(frames):
            other += size
            continue
        key = frames[0]
        entry = by_line.get(key)
        if entry is None:
            by_line[key] = [size, len(sizes)]
        else:
            entry[0] += size
            entry[1] += len(sizes)
        if key not in best or size > best[key][0]:
            best[key] = (size, frames)
    totals.total_bytes = sum(entry[0] for entry in by_line.values())
    totals.total_blocks = sum(entry[1] for entry in by_line.values())
    totals.malloc_bytes = sum(large)
    totals.all_blocks = len(traces)
    totals.other_bytes = other
    wanted = sorted(by_line, key=lambda key: by_line[key][0], reverse=True)[:limit]
    return totals, {key: [tuple(f) for f in best[key][1]] for key in wanted}


# ---------------------------------------------------------------- naming sites


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(os.path.dirname(os.__file__))
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    roots.update(os.path.join(p, "lib") for p in prefixes)
    return tuple(sorted(os.path.abspath(r) + os.sep for r in roots if r))


_ROOTS = _library_roots()


def register_interpreter(library_roots: list[str], own_dirs: list[str]) -> None:
    """Also class these as library and as leakscope's: the paths of a worker's interpreter.

    A worker may run under another Python than the tool's (``--python``, or
    the command of ``leakscope run``): its standard library and site-packages
    are elsewhere, and its frames name leakscope through the private link.
    """
    global _ROOTS, _OWN_DIRS
    roots = {os.path.abspath(r) + os.sep for r in library_roots if r}
    _ROOTS = tuple(sorted(set(_ROOTS) | roots))
    own = {os.path.abspath(d) + os.sep for d in own_dirs if d}
    _OWN_DIRS = tuple(sorted(set(_OWN_DIRS) | own))


def interpreter_paths() -> dict[str, list[str]]:
    """This interpreter's library roots and leakscope's directory, as a worker reports them."""
    return {"library_roots": list(_library_roots()), "own_dirs": [_LEAKSCOPE_DIR]}


def is_own_file(filename: str) -> bool:
    """A file of leakscope itself."""
    return os.path.abspath(filename).startswith(_OWN_DIRS)


def is_user_file(filename: str) -> bool:
    """True for the user's own code: not stdlib, site-packages, leakscope or <frozen>."""
    if not filename or filename.startswith("<"):
        return False
    if "site-packages" in filename or "dist-packages" in filename:
        return False
    path = os.path.abspath(filename)
    if path.startswith(_OWN_DIRS):
        return False
    return not path.startswith(_ROOTS)


@lru_cache(maxsize=512)
def _function_spans(filename: str) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, qualified name) of every def in a file."""
    try:
        with open(filename, "rb") as source:
            tree = ast.parse(source.read(), filename)
    except (OSError, SyntaxError, ValueError):
        return ()
    spans: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                if not isinstance(child, ast.ClassDef):
                    spans.append((first, child.end_lineno or child.lineno, name))
                visit(child, name + ".")
            elif isinstance(child, ast.Lambda):
                spans.append((child.lineno, child.end_lineno or child.lineno, f"{prefix}<lambda>"))
                visit(child, prefix)
            else:
                visit(child, prefix)

    visit(tree, "")
    return tuple(spans)


def function_at(filename: str, line: int) -> str:
    """The innermost function around ``line``, read from the source with ast.

    tracemalloc frames carry no function names; the source does.
    """
    best = "<module>"
    best_width = None
    for first, last, name in _function_spans(filename):
        if first <= line <= last and (best_width is None or last - first < best_width):
            best, best_width = name, last - first
    return best


def display_path(filename: str, base: str | None = None) -> str:
    """A path relative to the working directory when it lies under it."""
    if filename.startswith("<"):
        return filename
    base = base or os.getcwd()
    path = os.path.abspath(filename)
    if path.startswith(base.rstrip(os.sep) + os.sep):
        return os.path.relpath(path, base)
    return filename
