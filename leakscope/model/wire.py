"""Every message a measured process sends leakscope, declared once: one writer, one decoder.

A measured process (``leakscope.measure.harness`` under ``trace``, an armed process
under ``leakscope run`` or ``attach``) speaks in JSON lines: one object per
line, its kind in ``"t"``. The trace harness writes them to a pipe, an armed
process to its own events file; the pytest plugin hands the same messages
straight to the assembler in its own process. ``KINDS`` lists every kind with
its fields and their JSON types, and ``Decoder`` refuses any line that does
not match it with a one-line ``WireError``: a worker that writes to a file
descriptor it inherited must cost the run a clear error, never a traceback.

The first message (``started`` from the harness, ``hello`` from an armed
process) carries ``"v"``, the format's version ``MAJOR.MINOR``. A new optional
field or a new kind raises the minor version, and a reader drops fields it
does not know from a newer minor; anything else (a field renamed, removed or
retyped) raises the major version, and a reader refuses a major it does not
know. docs/wire.md describes the format for people.

This module is imported in the measured process, so it uses the standard
library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

VERSION = "1.0"
MAJOR, MINOR = (int(part) for part in VERSION.split("."))
# The longest line a reader takes. A final message with a thousand tracebacks
# and a holder report is a few MiB; a line past this is no message of ours,
# and a reader must not buffer a worker's endless output waiting for its end.
MAX_LINE_BYTES = 64 * 1024 * 1024
# How much of a refused line an error shows.
SHOWN_BYTES = 40

# A field's JSON type: one Python type, or a tuple of them (None for null).
FieldType: TypeAlias = "type | tuple[type | None, ...]"


@dataclass(frozen=True)
class Kind:
    """One kind of message: the fields it must carry and those it may carry."""

    name: str
    # Who writes it: "harness" (trace's child), "agent" (an armed process), "both".
    sender: str
    required: dict[str, FieldType] = field(default_factory=dict)
    optional: dict[str, FieldType] = field(default_factory=dict)
    # Checks inside the fields (a loop's index, each line change), one line each.
    check: Callable[[dict[str, Any]], str | None] | None = None
    doc: str = ""


def _check_loop(message: dict[str, Any]) -> str | None:
    loop = message["loop"]
    if not _is_int(loop.get("index")):
        return "loop.index is not a number"
    if not isinstance(loop.get("warmup"), bool):
        return "loop.warmup is not true or false"
    for key in loop:
        if not key.isidentifier() or key.startswith("_"):
            return f"loop.{key} is not a figure's name"  # set as an attribute by the reader
    return _check_changes(message)


def _check_changes(message: dict[str, Any]) -> str | None:
    for i, change in enumerate(message["changes"]):
        if not (isinstance(change, list) and len(change) == 4 and isinstance(change[0], str)
                and all(_is_int(n) for n in change[1:])):
            return f"changes[{i}] is not [file, line, size_diff, count_diff]"
    return None


def _check_final(message: dict[str, Any]) -> str | None:
    if not isinstance(message["outcome"].get("status"), str):
        return "outcome has no status"
    return None


_INT = int
_NUMBER = (int, float)
_TEXT_OR_NULL = (str, None)

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("started", "harness",
         required={"v": str, "python": str},
         optional={"library_roots": list, "own_dirs": list},
         doc="The harness is up (its interpreter's version and library paths); "
             "from here --timeout applies."),
    Kind("hello", "agent",
         required={"v": str, "pid": _INT, "parent_pid": _INT, "role": str, "command": str},
         optional={"unit": _TEXT_OR_NULL, "framework": _TEXT_OR_NULL, "info": dict,
                   "started_at": _NUMBER, "python": str, "library_roots": list,
                   "own_dirs": list},
         doc="An armed process opened its events file: who it is."),
    Kind("loaded", "harness", doc="The worker was imported; a stall from here is not at import."),
    Kind("measuring", "both", required={"warmup_loops": _INT},
         doc="Warm-up is over after this many loops; measuring starts."),
    Kind("phase", "both", required={"phase": str, "info": dict},
         doc="A collection phase began (fast mode's locate, a worker's detect)."),
    Kind("loop", "both", required={"loop": dict, "changes": list}, check=_check_loop,
         doc="One loop ended: its figures and its per-line changes "
             "[file, line, size_diff, count_diff]."),
    Kind("checkpoint", "both", required={"loops_done": _INT, "observation": dict},
         doc="What a holder walk or gc count saw after loops_done loops."),
    Kind("gathered", "harness",
         doc="Every loop the run wants is in; only the measured process's finish is left."),
    Kind("final", "both", required={"outcome": dict, "final": dict}, check=_check_final,
         doc="How the loop ended (outcome.status) and what only the live process knows "
             "(tracebacks, the final collection, holders)."),
    Kind("error", "harness", required={"code": _INT, "message": str},
         optional={"traceback": _TEXT_OR_NULL},
         doc="The worker could not be loaded: the exit code and the one line to print."),
    Kind("process", "agent", required={"role": str},
         optional={"unit": _TEXT_OR_NULL, "framework": _TEXT_OR_NULL, "info": dict},
         doc="An integration named this process, its unit of work and its limits."),
    Kind("lines", "agent", required={"changes": list}, check=_check_changes,
         doc="Line changes of the last measured unit, sent after it (diffs every few units)."),
    Kind("holders", "agent", required={"report": dict},
         doc="The last holder walk's report."),
    Kind("window", "agent", required={"end": dict}, optional={"holders": (dict, None)},
         doc="What the copy that closed the traced window saw (tracebacks, collection, "
             "holders)."),
    Kind("agent-error", "agent", required={"message": str},
         doc="leakscope gave up measuring this process; the worker goes on."),
)}


class WireError(ValueError):
    """A line that is no message of this format; ``str()`` is one line saying why."""

    def __init__(self, reason: str, line: bytes = b"") -> None:
        self.reason = reason
        self.line = line
        self.shown = shown(line) if line else ""
        super().__init__(f"{self.shown}: {reason}" if line else reason)


class VersionError(WireError):
    """The writer speaks a major version of the format this reader does not know."""


def shown(line: bytes) -> str:
    """The start of a line as an error shows it."""
    text = repr(line[:SHOWN_BYTES].decode("utf-8", "replace"))
    return text + ("..." if len(line) > SHOWN_BYTES else "")


# ------------------------------------------------------------------ writing


def encode(message: Mapping[str, Any]) -> bytes:
    """One message as its line. Values JSON has no type for are written as text."""
    if message.get("t") == "loop":
        line = _encode_loop(message)
        if line is not None:
            return line
    return (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()


# The loop message is sent after every loop, under tracemalloc, where each
# allocation pays for a traceback: json.dumps makes about a hundred (its
# encoder object, a string per key and per value, the chunks it joins). The
# same bytes come from one template per set of keys, filled in one ``%``:
# about a third of the cost. Anything the template cannot write exactly as
# json.dumps would (a value of another type, a float that is not finite)
# takes the general path.
_LOOP_TEMPLATES: dict[tuple[str, ...], str] = {}
_MAX_TEMPLATES = 32
_SEPARATORS = (",", ":")


class _NotPlain(Exception):
    pass


def _plain(value: Any) -> Any:
    """``value`` as ``%s`` writes it in JSON: int and finite float as themselves."""
    cls = value.__class__
    if cls is int:
        return value
    if cls is float:
        if value - value == 0.0:  # finite: str() is repr(), as json.dumps writes it
            return value
        raise _NotPlain
    if value is None:
        return "null"
    if cls is bool:
        return "true" if value else "false"
    if cls is str:
        quoted = _QUOTED.get(value)
        if quoted is not None:
            return quoted
    raise _NotPlain


# The phase names a loop record carries, quoted once.
_QUOTED = {name: json.dumps(name) for name in ("warmup", "measure", "locate", "detect")}


def _encode_loop(message: Mapping[str, Any]) -> bytes | None:
    """A loop message's line through its template; None when it needs json.dumps."""
    loop = message.get("loop")
    changes = message.get("changes")
    if len(message) != 3 or loop.__class__ is not dict or changes is None:
        return None
    keys = tuple(loop)
    template = _LOOP_TEMPLATES.get(keys)
    if template is None:
        if len(_LOOP_TEMPLATES) >= _MAX_TEMPLATES or not all(k.__class__ is str for k in keys):
            return None
        fields = ",".join(json.dumps(key).replace("%", "%%") + ":%s" for key in keys)
        template = _LOOP_TEMPLATES[keys] = '{"t":"loop","loop":{' + fields + '},"changes":%s}\n'
    # Every object made here comes from the interpreter's free list it returns to:
    # a display, not ``list()`` (whose list is fresh, then freed onto the list free
    # list), and tuple() of a list, whose length it knows (a tuple built from an
    # iterator is resized, then freed onto another size's list). Either would add
    # an allocated block a loop until that free list is full, read as the worker's
    # growth (tests/unit/test_free_lists.py).
    try:
        values = [*map(_plain, loop.values())]
    except _NotPlain:
        return None
    values.append(json.dumps(changes, separators=_SEPARATORS, default=str) if changes else "[]")
    return (template % tuple(values)).encode()


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (a pipe may take a long line in parts); OSError goes to the caller,
    whose policy it is (the harness exits, an armed process stops writing)."""
    written = os.write(fd, data)
    if written == len(data):  # the usual case: no view to make (this runs under tracemalloc)
        return
    view = memoryview(data)[written:]
    while view:
        view = view[os.write(fd, view):]


def send(fd: int, message: Mapping[str, Any]) -> None:
    """The one writer: ``message`` as one whole line on ``fd``."""
    write_all(fd, encode(message))


def first(kind: str, **fields: Any) -> dict[str, Any]:
    """A first message (``started``, ``hello``), stamped with the format's version."""
    return {"t": kind, "v": VERSION, **fields}


class MessageObserver:
    """The collector's observer as messages: each event becomes one message to ``send``.

    The harness sends them down its pipe, an armed process to its events
    file, the pytest plugin straight to its assembler: one set of messages,
    whichever way they travel.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        self.send = send

    def on_measuring(self, warmup_loops: int) -> None:
        self.send({"t": "measuring", "warmup_loops": warmup_loops})

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        self.send({"t": "phase", "phase": phase, "info": info})

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        self.send({"t": "loop", "loop": loop, "changes": changes})

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        self.send({"t": "checkpoint", "loops_done": loops_done, "observation": observation})

    def on_lines(self, changes: list[tuple[str, int, int, int]]) -> None:
        self.send({"t": "lines", "changes": changes})

    def on_holders(self, report: dict[str, Any]) -> None:
        self.send({"t": "holders", "report": report})

    def on_window(self, described: dict[str, Any]) -> None:
        self.send({"t": "window", **described})


# ------------------------------------------------------------------ reading


def check_version(value: Any) -> int:
    """The writer's minor version; VersionError unless its major is ours."""
    parts = value.split(".") if isinstance(value, str) else []
    if len(parts) != 2 or not all(part.isdigit() for part in parts):
        raise VersionError(f"wire version {value!r} is not MAJOR.MINOR")
    major, minor = int(parts[0]), int(parts[1])
    if major != MAJOR:
        raise VersionError(
            f"the measured process speaks wire version {value}, this leakscope reads "
            f"{MAJOR}.x: run the same leakscope on both sides"
        )
    return minor


def check(message: Any, minor: int = MINOR) -> dict[str, Any]:
    """``message`` if it is a message of ``KINDS``; WireError (one line) if not.

    ``minor`` is the writer's minor version: fields a newer minor added are
    dropped, fields not in ``KINDS`` from our own minor or an older one are
    refused (they were not written by a leakscope).
    """
    if not isinstance(message, dict):
        raise WireError(f"not a message (a JSON {_json_type(message)}, not an object)")
    name = message.get("t")
    if not isinstance(name, str):
        raise WireError("not a message (no \"t\" naming its kind)")
    kind = KINDS.get(name)
    if kind is None:
        if minor > MINOR:
            return message  # a kind from a newer minor: the reader skips it
        raise WireError(f"unknown message kind {name!r}")
    for key, expected in kind.required.items():
        if key not in message:
            raise WireError(f"{name} message without {key!r}")
        problem = _type_problem(message[key], expected)
        if problem:
            raise WireError(f"{name} message's {key!r} is {problem}")
    unknown = []
    for key, value in message.items():
        if key == "t" or key in kind.required:
            continue
        if key in kind.optional:
            problem = _type_problem(value, kind.optional[key])
            if problem:
                raise WireError(f"{name} message's {key!r} is {problem}")
        else:
            unknown.append(key)
    if unknown:
        if minor <= MINOR:
            raise WireError(f"{name} message with unknown field {unknown[0]!r}")
        for key in unknown:
            del message[key]
    if kind.check is not None:
        failure = kind.check(message)
        if failure:
            raise WireError(f"{name} message: {failure}")
    return message


def parse(line: bytes, limit: int = MAX_LINE_BYTES) -> Any:
    """A line's JSON value, unchecked; WireError if it is too long or not JSON."""
    if len(line) > limit:
        raise WireError(f"a line of {len(line)} bytes, longer than any message "
                        f"({limit} bytes)", line)
    try:
        return json.loads(line)
    except RecursionError:
        raise WireError("not a message (nested too deeply)", line) from None
    except ValueError:  # not JSON, or not UTF-8
        raise WireError("not a JSON line", line) from None


def decode(line: bytes, minor: int = MINOR, limit: int = MAX_LINE_BYTES) -> dict[str, Any]:
    """One line (without its newline) as a checked message; WireError if it is not one.

    A line that carries ``"v"`` is checked against the version it names.
    """
    decoder = Decoder(limit)
    decoder.minor = minor
    return decoder.decode(line)


class Decoder:
    """A byte stream of messages, as it arrives: whole lines decoded, the rest kept.

    It learns the writer's version from the first message that carries
    ``"v"``; the part of a line not yet arrived stays in ``pending``, so a
    reader that is interrupted between two reads loses nothing.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self.limit = limit
        self.pending = b""
        self.minor = MINOR
        self.version: str | None = None

    def lines(self, chunk: bytes) -> list[bytes]:
        """The whole lines ``chunk`` completes; WireError if a line grows past the limit."""
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        if len(self.pending) > self.limit:
            line, self.pending = self.pending, b""
            raise WireError(f"a line longer than any message ({self.limit} bytes)", line)
        return lines

    def decode(self, line: bytes) -> dict[str, Any]:
        """One whole line as a checked message; the first to carry ``"v"`` sets the version."""
        message = parse(line, self.limit)
        try:
            if self.version is None and isinstance(message, dict) and "v" in message:
                self.minor = check_version(message["v"])
                self.version = message["v"]
            return check(message, self.minor)
        except WireError as exc:
            raise type(exc)(exc.reason, line) from None

    def messages(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        """Every message ``chunk`` completes, in order; WireError at the first bad line."""
        for line in self.lines(chunk):
            yield self.decode(line)

    def close(self) -> None:
        """The stream ended: WireError if it stopped inside a line."""
        if self.pending:
            line, self.pending = self.pending, b""
            raise WireError("a line cut off without its end", line)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(value: Any, expected: FieldType) -> str:
    """'' when ``value`` has the JSON type ``expected``, else what it is instead."""
    options = expected if isinstance(expected, tuple) else (expected,)
    for option in options:
        if option is None:
            if value is None:
                return ""
        elif option is int:
            if _is_int(value):
                return ""
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return ""
        elif isinstance(value, option):
            return ""
    return f"a JSON {_json_type(value)}, expected {_names(options)}"


def _names(options: tuple[type | None, ...]) -> str:
    words: dict[type | None, str] = {
        dict: "an object", list: "a list", str: "a string", int: "an integer",
        float: "a number", bool: "true or false", None: "null",
    }
    return " or ".join(words.get(option, str(option)) for option in options)


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
