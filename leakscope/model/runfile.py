"""The run file: Run/Loop/Site/Holder/Verdict, its schema check and atomic save.

The JSON written here *is* the run file of CONTRACT.md (schema
``leakscope.run/1``); there is no second writer. Fields may be added, never
renamed. ``load`` checks ``schema`` before anything else, so a foreign or
corrupt file gets one clear line instead of a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import os
import platform
import stat
import types
import typing
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import leakscope
from leakscope.model.errors import RunFileError
from leakscope.model.units import format_bytes, format_count

SCHEMA = "leakscope.run/1"
# The most of a run file `load` reads. A 10,000-loop trace is ~10 MB and a long
# `leakscope run` of many processes stays well under this; the cap keeps a
# mistaken or hostile path (/dev/zero, a disk image) from exhausting memory.
MAX_RUN_FILE_BYTES = 256 * 1024 * 1024
# No byte count, rate or loop index comes near 1e30, and any product of two such
# numbers is still a finite float, so no renderer can overflow on one.
MAX_NUMBER = 10**30
MAX_NUMBER_DIGITS = 31
# Free-form parts of a run file (settings, observations, evidence) are never
# nested deeper than a few levels by leakscope; deeper is no run of ours.
MAX_FREE_DEPTH = 32


@dataclass
class Frame:
    file: str
    line: int
    function: str = ""


@dataclass
class LineDelta:
    """What one file:line kept (or freed) in one loop: Swoole Tracker's line."""

    file: str
    line: int
    size_diff: int
    count_diff: int


@dataclass
class Loop:
    index: int
    warmup: bool
    # "warmup", "measure" (full mode), "detect" (fast mode, untraced) or "locate"
    # (fast mode, traced after growth was detected).
    phase: str = "measure"
    traced_bytes: int | None = None
    traced_blocks: int | None = None
    rss_bytes: int | None = None
    # Counting gc objects walks the whole heap, so it is read at checkpoints only.
    gc_objects: int | None = None
    net_bytes: int | None = None
    top: list[LineDelta] = field(default_factory=list)
    native_bytes: int | None = None
    malloc_bytes: int | None = None
    # What glibc's malloc holds from the system, free chunks included: RSS
    # beyond it is memory mapped outside malloc (analysis.rules, the RSS rule).
    malloc_heap_bytes: int | None = None
    tracemalloc_bytes: int | None = None
    allocated_blocks: int | None = None
    gc_collections: int | None = None
    seconds: float | None = None
    # `leakscope run`: the process's peak RSS so far (ru_maxrss), as Celery reads it.
    peak_rss_bytes: int | None = None
    # The per-line diff of this loop covers loops span_from..index (the loops
    # between two diffs have totals only); None when it covers this loop alone.
    span_from: int | None = None
    # leakscope's own time in the measured process before this loop was recorded.
    harness_seconds: float | None = None


@dataclass
class Verdict:
    leak: bool
    kind: str  # "reachable" | "cyclic-garbage" | "native" | "none"
    bytes_per_iteration: float
    blocks_per_iteration: float
    confidence: float
    summary: str
    partial: bool = False
    # Why a partial run ended early, in words: "interrupted", or the worker's
    # failure ("worker process was killed by SIGKILL in loop 8 ..."); "" when whole.
    ended: str = ""
    iterations_to_limit: int | None = None
    memory_limit_bytes: int | None = None
    projection: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def undecided(self) -> bool:
        """Not a leak, and not "no leak" either: the data could not tell (see ``needs_units``)."""
        return not self.leak and "needs_units" in self.evidence

    def rate(self, unit: str) -> str:
        """Its rate for a person ("440 B/iter"), in blocks where no byte rate was read.

        Fast mode can call a leak on the counters' blocks while its few traced
        loops kept no bytes any line can show: "0 B/iter" would read as none.
        """
        if self.bytes_per_iteration <= 0 < self.blocks_per_iteration:
            return f"{format_count(self.blocks_per_iteration)} blocks/{unit}"
        return f"{format_bytes(self.bytes_per_iteration)}/{unit}"


@dataclass
class Site:
    file: str
    line: int
    function: str
    traceback: list[Frame]
    user_frame: Frame | None
    bytes_per_iteration: float
    blocks_per_iteration: float
    growing: bool
    kept_bytes: int = 0
    kept_blocks: int = 0
    # Kept bytes over the measured loops, thinned to at most SERIES_POINTS points.
    series: list[int] = field(default_factory=list)
    holder: str | None = None
    # Its kept memory sits in a bounded container (an lru_cache filling toward
    # its maxsize, or full and turning over): reported apart, never growing.
    filling: bool = False
    # Which engine located it: "tracemalloc" (Python's allocators) or "memray"
    # (the memray locator, which also sees C allocations).
    engine: str = "tracemalloc"
    # Memory allocated in native code (memray only): {"function", "library"}, the
    # innermost native function outside the interpreter and the C library, and
    # the file it lives in ("<unknown>" when its symbols are stripped).
    native: dict[str, str] | None = None


@dataclass
class Holder:
    path: str
    type: str
    role: str  # "registry" | "callback-list"
    items_first: int
    items_last: int
    items_per_iteration: float
    item_types: dict[str, int] = field(default_factory=dict)
    callables_defined_at: list[str] = field(default_factory=list)
    grown_at: str | None = None
    items_made_at: list[str] = field(default_factory=list)
    items_series: list[int] = field(default_factory=list)
    bound: int | None = None
    growing: bool = True
    # Innermost first: the line that grew it, up to the user's line.
    grown_at_stack: list[list[Any]] = field(default_factory=list)
    keys_sample: list[str] = field(default_factory=list)
    item_noun: str = "item"
    # "walk" (forward from modules, with growth seen at every checkpoint) or
    # "backrefs" (objgraph's chain back from a leaked object to a module).
    found_by: str = "walk"


@dataclass(eq=False)
class Observations(MutableMapping[str, Any]):
    """Raw facts of a run that the verdict, the advice and the renderers read.

    Each fact the run file has carried is a named, typed field; ``None`` means
    "not observed", and such a field is left out of the run file, as an
    absent key was before. Keys no field names (a newer leakscope's, another
    tool's) are kept in ``extra`` and written back unchanged, so every run
    file loads. The mapping interface (``get``, ``[]``, ``in``,
    ``setdefault``) reads and writes the same facts by their run-file names,
    so readers written against the old dict keep working.
    """

    # Where and how the run was made.
    cwd: str | None = None
    target_kind: str | None = None
    in_process: bool | None = None
    # `leakscope run`: the command, how it was stopped; `leakscope attach`: how it was reached.
    command: dict[str, Any] | None = None
    attach: dict[str, Any] | None = None
    # How the run ended, when not as asked.
    interrupted: bool | None = None
    interrupted_while_finishing: bool | None = None
    ended: str | None = None
    script_ended_early: bool | None = None
    unsaved_end: bool | None = None
    idle: bool | None = None
    partial_because: str | None = None
    ended_during_span: bool | None = None
    # What the measured process saw (its final message).
    phases: list[dict[str, Any]] | None = None
    gc_enabled: bool | None = None
    gc_collections: int | None = None
    harness_seconds: float | None = None
    malloc_counter: bool | None = None
    detection: dict[str, Any] | None = None
    other_threads_max: int | None = None
    rss_before_tracing_bytes: int | None = None
    gc_final: dict[str, Any] | None = None
    locator: dict[str, Any] | None = None
    holder_search: dict[str, Any] | None = None
    elapsed_seconds: float | None = None
    native_counter: str | None = None
    # `leakscope run`'s combined run: the lead process, every process, the advice.
    lead_process: dict[str, Any] | None = None
    processes: list[dict[str, Any]] | None = None
    advice: list[str] | None = None
    # Keys no field above names, as they were read or set.
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Observations:
        observations = cls()
        for key, value in data.items():
            observations[key] = value
        return observations

    def to_dict(self) -> dict[str, Any]:
        """The run file's ``observations`` object: the facts observed, then ``extra``'s keys."""
        return copy.deepcopy(dict(self.items()))

    def __getitem__(self, key: str) -> Any:
        if key in _OBSERVATION_FIELDS:
            value = getattr(self, key)
            if value is None:
                raise KeyError(key)
            return value
        return self.extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _OBSERVATION_FIELDS:
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in _OBSERVATION_FIELDS:
            if getattr(self, key) is None:
                raise KeyError(key)
            setattr(self, key, None)
        else:
            del self.extra[key]

    def __iter__(self) -> Iterator[str]:
        for name in _OBSERVATION_FIELDS:
            if getattr(self, name) is not None:
                yield name
        yield from list(self.extra)

    def __len__(self) -> int:
        return sum(1 for _ in self)


# The run-file keys that are fields of Observations (``extra`` holds the rest).
_OBSERVATION_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(Observations) if f.name != "extra"
)


@dataclass
class Run:
    target: str
    python: str
    started_at: str
    settings: dict[str, Any]
    loops: list[Loop] = field(default_factory=list)
    verdict: Verdict | None = None
    sites: list[Site] = field(default_factory=list)
    holders: list[Holder] = field(default_factory=list)
    schema: str = SCHEMA
    leakscope_version: str = ""
    finished_at: str | None = None
    mode: str = "full"
    unit: str = "iteration"
    platform: str = ""
    # Raw facts the analysis reads (final gc.collect(), gc state, bounded caches).
    observations: Observations = field(default_factory=Observations)
    bounded: list[dict[str, Any]] = field(default_factory=list)
    process: dict[str, Any] | None = None
    processes: list[Run] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A plain dict (a run file's object, a test's literal) becomes typed facts.
        if not isinstance(self.observations, Observations):
            self.observations = Observations.from_dict(self.observations)

    @property
    def measured(self) -> list[Loop]:
        return [loop for loop in self.loops if not loop.warmup]


_LOOP_FIELDS = tuple(f.name for f in fields(Loop))


def _loop_dict(loop: Loop) -> dict[str, Any]:
    """``asdict(loop)`` without its recursive deep copy (every value is a number, a
    string or None): a 2,000-loop run's file took 0.15-0.35 s of ``asdict``."""
    data = {name: getattr(loop, name) for name in _LOOP_FIELDS}
    data["top"] = [
        {"file": t.file, "line": t.line, "size_diff": t.size_diff, "count_diff": t.count_diff}
        for t in loop.top
    ]
    return data


def _run_dict(run: Run) -> dict[str, Any]:
    """``asdict(run)``, its loops (the bulk of a long run) written by ``_loop_dict``."""
    data = asdict(replace(run, loops=[], processes=[]))
    data["loops"] = [_loop_dict(loop) for loop in run.loops]
    data["processes"] = [_run_dict(process) for process in run.processes]
    return data


def to_dict(run: Run) -> dict[str, Any]:
    data = _run_dict(run)
    # Keep the contract's order at the top of the file for people who read it.
    ordered = {key: data.pop(key) for key in ("schema", "target", "python", "started_at")}
    ordered.update(data)
    # Typed facts go out as the run file's object: observed ones only, as before.
    ordered["observations"] = run.observations.to_dict()
    if not run.processes:
        ordered.pop("processes")
    else:
        for process, written in zip(run.processes, ordered["processes"], strict=True):
            written["observations"] = process.observations.to_dict()
    if run.process is None:
        ordered.pop("process")
    return ordered


def _build(cls: type, data: dict[str, Any]) -> Any:
    """Construct a dataclass from a dict, ignoring fields added by newer writers."""
    names = {f.name for f in fields(cls)}
    return cls(**{key: value for key, value in data.items() if key in names})


def _frame(data: dict[str, Any] | None) -> Frame | None:
    return None if data is None else _build(Frame, data)


def from_dict(data: dict[str, Any]) -> Run:
    loops = [
        _build(Loop, {**loop, "top": [_build(LineDelta, t) for t in loop.get("top", [])]})
        for loop in data.get("loops", [])
    ]
    sites = [
        _build(
            Site,
            {
                **site,
                "traceback": [_build(Frame, f) for f in site.get("traceback", [])],
                "user_frame": _frame(site.get("user_frame")),
            },
        )
        for site in data.get("sites", [])
    ]
    holders = [_build(Holder, h) for h in data.get("holders", [])]
    verdict = _build(Verdict, data["verdict"]) if data.get("verdict") else None
    processes = [from_dict(p) for p in data.get("processes", [])]
    rest = {
        key: value
        for key, value in data.items()
        if key not in {"loops", "sites", "holders", "verdict", "processes"}
    }
    return _build(
        Run,
        {**rest, "loops": loops, "sites": sites, "holders": holders, "verdict": verdict,
         "processes": processes},
    )


# The directory leakscope keeps its runs in, beside the code it traces.
RUNS_DIRECTORY = ".leakscope"


def check_runs_directory(path: str | os.PathLike[str]) -> None:
    """Refuse to write under a ``.leakscope/`` that another user could have planted.

    In a shared directory, a ``.leakscope/`` (or a symlink of that name) made
    beforehand by someone else, or one anyone may write to, lets them read,
    replace or redirect the runs saved there. Missing ones are made by ``save``.
    """
    if not hasattr(os, "geteuid"):  # pragma: no cover - no Unix owners to compare
        return
    absolute = Path(os.path.abspath(path))
    for directory in (absolute, *absolute.parents):
        if directory.name != RUNS_DIRECTORY:
            continue
        try:
            link, info = os.lstat(directory), os.stat(directory)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RunFileError(f"{directory}: cannot check it: {exc.strerror or exc}") from None
        me = os.geteuid()
        for entry in (link, info):
            if entry.st_uid != me:
                raise RunFileError(
                    f"{directory}: owned by another user (uid {entry.st_uid}); leakscope "
                    "will not keep runs there (remove it, or name another --json path)"
                )
        if info.st_mode & stat.S_IWOTH:
            raise RunFileError(
                f"{directory}: writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                "leakscope will not keep runs there (chmod o-w it, or name another --json path)"
            )


def _make_parents(directory: Path) -> None:
    """Create ``directory``; a ``.leakscope`` in it is made 0755, never writable by others."""
    absolute = Path(os.path.abspath(directory))
    for ancestor in reversed((absolute, *absolute.parents)):
        if ancestor.name == RUNS_DIRECTORY and not ancestor.exists():
            ancestor.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                ancestor.mkdir(mode=0o755)
    absolute.mkdir(parents=True, exist_ok=True)


def save(run: Run, path: str | os.PathLike[str]) -> Path:
    """Write the run atomically (private to its owner): a reader never sees a half-written file."""
    from leakscope.model.atomic import write_atomic

    target = Path(path)
    check_runs_directory(target)
    text = json.dumps(to_dict(run), separators=(",", ":")) + "\n"
    try:
        _make_parents(target.parent)
        return write_atomic(target, text)
    except OSError as exc:  # disk full, target is a directory, ...
        raise RunFileError(f"{target}: cannot write run file: {exc.strerror or exc}") from None


_REQUIRED = {"target": str, "python": str, "started_at": str, "settings": dict, "loops": list}


def validate(data: Any, source: str = "run file") -> None:
    """Reject anything that is not a leakscope.run/1 object, with the reason."""
    if not isinstance(data, dict):
        raise RunFileError(f"{source}: not a leakscope run file (top level is not an object)")
    schema = data.get("schema")
    if schema != SCHEMA:
        found = "no schema field" if schema is None else f"schema {schema!r}"
        raise RunFileError(f"{source}: not a leakscope run file ({found}; expected {SCHEMA!r})")
    for key, kind in _REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise RunFileError(
                f"{source}: corrupt run file: {key!r} missing or not a {kind.__name__}"
            )
    for i, loop in enumerate(data["loops"]):
        if not isinstance(loop, dict) or not isinstance(loop.get("index"), int):
            raise RunFileError(f"{source}: corrupt run file: loops[{i}] has no integer index")
    verdict = data.get("verdict")
    if verdict is not None and (
        not isinstance(verdict, dict) or not isinstance(verdict.get("leak"), bool)
    ):
        raise RunFileError(f"{source}: corrupt run file: verdict has no boolean 'leak'")
    bounded = data.get("bounded", [])
    problem = (_processes_problem(data) or _field_problem(Run, data, "run")
               or _bounded_problem(bounded if isinstance(bounded, list) else [], "run.bounded"))
    if problem is not None:
        raise RunFileError(f"{source}: corrupt run file: {problem}")


def _processes_problem(data: dict[str, Any]) -> str | None:
    """A run nests its processes one level; deeper is no file of ours (and would recurse)."""
    processes = data.get("processes", [])
    for i, process in enumerate(processes if isinstance(processes, list) else []):
        if not isinstance(process, dict):
            continue  # the field-by-field check names it
        if process.get("processes"):
            return f"run.processes[{i}] has processes of its own: processes nested too deeply"
        bounded = process.get("bounded", [])
        if isinstance(bounded, list):
            problem = _bounded_problem(bounded, f"run.processes[{i}].bounded")
            if problem is not None:
                return problem
    return None


# What the renderers and the analysis read from each ``bounded`` entry.
_BOUNDED_FIELDS: dict[str, Any] = {"path": str, "type": str, "items": int, "bound": int}
_BOUNDED_OPTIONAL: dict[str, Any] = {"filling": bool, "full": bool, "items_series": list[int]}


def _bounded_problem(entries: list[Any], where: str) -> str | None:
    for i, entry in enumerate(entries):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict):
            return f"{here} is {_json_type(entry)}, expected an object"
        for name, kind in {**_BOUNDED_FIELDS, **_BOUNDED_OPTIONAL}.items():
            if name not in entry:
                if name in _BOUNDED_FIELDS:
                    return f"{here} has no {name!r}"
                continue
            problem = _value_problem(entry[name], kind, f"{here}.{name}")
            if problem is not None:
                return problem
    return None


# ----------------------------------------------------- field-by-field types
#
# A run file that parses but holds a string where a number belongs would
# otherwise reach a renderer and fail there with a traceback. Every field is
# checked against its dataclass annotation once, on load, so the message can
# name the field (``verdict.confidence is str, expected float``).


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _field_problem(cls: type, data: Any, where: str) -> str | None:
    if not isinstance(data, dict):
        return f"{where} is {_json_type(data)}, expected an object"
    hints = _hints(cls)
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                return f"{where} has no {f.name!r}"
            continue
        problem = _value_problem(data[f.name], hints[f.name], f"{where}.{f.name}")
        if problem is not None:
            return problem
        choices = _CHOICES.get((cls, f.name))
        if choices is not None and data[f.name] not in choices:
            return (f"{where}.{f.name} is {json.dumps(data[f.name])}, expected one of "
                    f"{', '.join(choices)}")
    return None


# Fields that name one of a few things. The HTML page uses some as CSS class
# names, where a space or a quote would stop its script; an unknown value is a
# file from a newer leakscope or no run file at all, so it is refused at load.
_CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (Verdict, "kind"): ("reachable", "cyclic-garbage", "native", "none"),
    (Holder, "role"): ("registry", "callback-list"),
    (Holder, "found_by"): ("walk", "backrefs"),
    (Loop, "phase"): ("warmup", "measure", "detect", "locate"),
    (Run, "mode"): ("full", "fast"),
    (Site, "engine"): ("tracemalloc", "memray"),
}


def _too_deep(value: Any, limit: int = MAX_FREE_DEPTH) -> bool:
    """Whether free-form JSON nests deeper than ``limit``; iterative, so it cannot recurse."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


def _value_problem(value: Any, kind: Any, where: str) -> str | None:
    origin = typing.get_origin(kind)
    if kind is Any:
        return f"{where} is nested too deeply" if _too_deep(value) else None
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        problems = [_value_problem(value, option, where) for option in options
                    if option is not type(None)]
        return None if None in problems else problems[0]
    if origin is list:
        if not isinstance(value, list):
            return f"{where} is {_json_type(value)}, expected a list"
        (item,) = typing.get_args(kind)
        for i, element in enumerate(value):
            problem = _value_problem(element, item, f"{where}[{i}]")
            if problem is not None:
                return problem
        return None
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            return f"{where} is {_json_type(value)}, expected an object"
        item = typing.get_args(kind)[1] if typing.get_args(kind) else Any
        if item is Any:
            return f"{where} is nested too deeply" if _too_deep(value) else None
        for key, element in value.items():
            problem = _value_problem(element, item, f"{where}[{json.dumps(key)}]")
            if problem is not None:
                return problem
        return None
    if kind is Observations:
        # Its named facts are typed; keys from elsewhere are free-form, as before.
        problem = _field_problem(kind, value, where)
        if problem is None and _too_deep(value):
            problem = f"{where} is nested too deeply"
        return problem
    if isinstance(kind, type) and is_dataclass(kind):
        return _field_problem(kind, value, where)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:  # 12.0 from another JSON writer is still 12
        ok = (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if ok:
        return None
    if value is None:
        return f"{where} is null, expected {kind.__name__}"
    return f"{where} is {_json_type(value)}, expected {kind.__name__}"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def load(path: str | os.PathLike[str]) -> Run:
    """Read, parse and validate a run file: the one door every saved run comes in by.

    Anything else in it is data from elsewhere (a CI artifact, a bug report),
    so every way it can be wrong is a RunFileError with one line (exit 2),
    never a traceback, a hang or an exit 1 that CI would read as a leak.
    """
    source = str(path)
    text = _read_text(path, source)
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise RunFileError(
            f"{source}: corrupt run file: not JSON (line {exc.lineno}, column {exc.colno})"
        ) from None
    except _BadNumberError as exc:
        raise RunFileError(f"{source}: corrupt run file: {exc}") from None
    except RecursionError:
        raise RunFileError(
            f"{source}: corrupt run file: nested too deeply to be a run file"
        ) from None
    try:
        validate(data, source)
        return from_dict(data)
    except RecursionError:
        raise RunFileError(
            f"{source}: corrupt run file: nested too deeply to be a run file"
        ) from None
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise RunFileError(f"{source}: corrupt run file: {exc}") from None


def _read_text(path: str | os.PathLike[str], source: str) -> str:
    """The file's text, if it is a regular file of at most MAX_RUN_FILE_BYTES.

    A device (/dev/zero) would be read until memory ran out and a FIFO would
    block for ever, so the type is checked before opening, and again on the
    open descriptor (opened non-blocking) in case the path was swapped.
    """
    try:
        _check_regular(os.stat(path), source)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise RunFileError(f"{source}: no such run file") from None
    except OSError as exc:
        raise RunFileError(f"{source}: cannot read run file: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            _check_regular(os.fstat(handle.fileno()), source)
            raw = handle.read(MAX_RUN_FILE_BYTES + 1)
    except OSError as exc:
        raise RunFileError(f"{source}: cannot read run file: {exc.strerror or exc}") from None
    if len(raw) > MAX_RUN_FILE_BYTES:
        raise RunFileError(_too_large(source))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{source}: cannot read run file: not UTF-8 text ({exc.reason} "
                           f"at byte {exc.start})") from None


def _check_regular(info: os.stat_result, source: str) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise RunFileError(f"{source}: is a directory, not a run file")
    if not stat.S_ISREG(info.st_mode):
        raise RunFileError(f"{source}: not a regular file (a device, FIFO or socket), "
                           "not a run file")
    if info.st_size > MAX_RUN_FILE_BYTES:
        raise RunFileError(_too_large(source))


def _too_large(source: str) -> str:
    return (f"{source}: larger than {MAX_RUN_FILE_BYTES // 1024**2} MiB, the most a run file "
            "is read to")


class _BadNumberError(ValueError):
    """A JSON number no run holds: its text is the message."""


def _parse_int(text: str) -> int:
    # The length is checked first: int() of 5,000 digits is itself an error.
    if len(text.lstrip("-")) <= MAX_NUMBER_DIGITS:
        value = int(text)
        if abs(value) <= MAX_NUMBER:
            return value
    raise _BadNumberError(f"number out of range ({text[:24]}{'...' if len(text) > 24 else ''})")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise _BadNumberError(f"number out of range ({text[:24]})")
    return value


def _parse_constant(name: str) -> float:
    raise _BadNumberError(f"{name} is not a number a run file may hold")


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_run(
    target: str,
    settings: dict[str, Any] | None = None,
    *,
    python: str | None = None,
    started_at: str | None = None,
) -> Run:
    """A Run about to be filled: this leakscope, this platform, started now (``settings``
    copied)."""
    return Run(
        target=target, python=python or platform.python_version(),
        started_at=started_at or now_iso(), settings=dict(settings or {}),
        leakscope_version=leakscope.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )
