"""Settings of one run, shared by the CLI, the config file and the traced child."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_ITERATIONS = 50
# Five untraced loops, as CPython's refleak hunter does: enough for imports,
# lazy singletons and first-call caches, short enough to stay cheap.
DEFAULT_WARMUP = 5
DEFAULT_FRAMES = 10
# tracemalloc's own limit: a deeper --frames fails inside the worker, where it
# would read as the worker's failure (exit 3) rather than bad usage.
MAX_FRAMES = 65535
DEFAULT_MEMORY_LIMIT = 512 * 1024 * 1024
# A loop that makes no progress for this long is a hang (or a script that
# never calls tick()).
DEFAULT_TIMEOUT = 120.0
# Timeouts and durations above this (about 115 days) are refused: infinity or
# 1e300 would overflow the pipe waits (select, Event.wait) deep in a run.
MAX_SECONDS = 10_000_000.0
DEFAULT_TOP = 10
# Fast mode measures untraced, so it can afford more loops (better statistics);
# traced locate loops are few because each costs what tracemalloc costs.
DEFAULT_FAST_ITERATIONS = 200
DEFAULT_LOCATE_LOOPS = 6
# --warmup auto: stop warming once per-loop block growth has been steady
# for this many loops, but never warm more than AUTO_WARMUP_MAX loops.
AUTO_WARMUP_MIN = 3
AUTO_WARMUP_STEADY = 4
AUTO_WARMUP_MAX = 100
# `leakscope run`: a real worker's framework warms up over more units than a
# scenario's loop (connections, first-task imports, per-task-name caches).
DEFAULT_RUN_WARMUP = 10
# `leakscope run`: walk the heap for holders every this many traced units.
DEFAULT_CHECKPOINT_EVERY = 100
# `leakscope run --sample auto|K`: a traced process goes back to the counters
# after this many traced units: enough for three holder walks (0, 10, 30
# units) and a last one as the window closes, the line that grows a
# container (the third walk's copy and the description answer within the
# last 10), and the lines' rates, while a worker that runs for days pays
# tracemalloc's price once. 60 cost a Celery pool child 20 more units at 5x
# their untraced time for lines' rates read over 60 units instead of 40.
DEFAULT_TRACE_UNITS = 40
# ... and no fewer than this: holder walks at 0, 10 and 30 traced units, then
# the unit that locates the line growing a container.
MIN_TRACE_UNITS = 32
# `leakscope run`: frames kept per traced allocation. tracemalloc's cost grows
# with the depth (an allocation-heavy Celery task: 5.3 ms at 5 frames, 13.8 ms
# at 10, 0.42 ms untraced), and a worker's user line is seldom more than a
# few library frames above the allocation.
DEFAULT_RUN_FRAMES = 5


@dataclass
class Settings:
    iterations: int = DEFAULT_ITERATIONS
    warmup: int | str = DEFAULT_WARMUP  # a count, or "auto"
    frames: int = DEFAULT_FRAMES
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    timeout: float = DEFAULT_TIMEOUT
    top: int = DEFAULT_TOP
    holders: bool = True
    mode: str = "full"  # or "fast"
    locate_loops: int = DEFAULT_LOCATE_LOOPS
    # `leakscope run` only: trace one window in `sample` units (1: every unit;
    # 0: auto, priced per process), and walk for holders every
    # `checkpoint_every` traced units.
    sample: int = 1
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    # `leakscope run`: traced units per process before tracing stops for good
    # (0: no limit, as with --sample 1).
    trace_units: int = 0
    args: list[str] = field(default_factory=list)
    # `trace` and `check`: the interpreter that runs the worker ("" = leakscope's
    # own) and why it was chosen (see leakscope.drive.interpreter).
    python: str = ""
    python_from: str = ""
    # Fast mode's locating engine: "auto" (memray where the worker's Python can
    # import it, else tracemalloc), "memray" or "tracemalloc" (LEAKSCOPE_LOCATOR).
    locator: str = "auto"
    # Where the memray window writes its capture: a directory the parent makes
    # and removes ("" = no memray window).
    capture_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)


# The one check of every setting's value, whichever face it came through: the
# command line, [tool.leakscope] in pyproject.toml, or the pytest marker and
# fixture. Each face says where the value was written; the rule says what
# would do, in the same words everywhere.


class SettingError(ValueError):
    """A setting's value refused; ``expected`` says what would do."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(f"{name} = {value!r}: {expected}")
        self.name = name
        self.value = value
        self.expected = expected


def _whole(value: Any, low: int, high: int | None = None) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int) and value >= low
            and (high is None or value <= high))


def _seconds(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and 0 < value <= MAX_SECONDS)


def _size(value: Any) -> int | None:
    """Bytes from "512MiB", "4KiB", "0B" or a whole number of bytes; None if it is none."""
    from leakscope.model.errors import UsageError
    from leakscope.model.units import MAX_SIZE, parse_size

    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_SIZE else None
    if not isinstance(value, str):
        return None
    try:
        return parse_size(value)
    except UsageError:
        return None


SECONDS = f"expected a number of seconds above 0, at most {MAX_SECONDS:,.0f}"
EXPECTED: dict[str, str] = {
    "iterations": "expected a whole number of 1 or more",
    "warmup": 'expected a whole number of 0 or more, or "auto"',
    "frames": f"expected a whole number from 1 to {MAX_FRAMES}",
    "top": "expected a whole number of 0 or more",
    "timeout": SECONDS,
    "memory_limit": 'not a size (use e.g. "512MiB", "2GiB")',
    "max_growth": 'not a size per iteration (use e.g. "0B", "512B", "4KiB", "1MiB")',
    "holders": "expected true or false",
    "mode": 'expected "fast" or "full"',
    "sample": 'expected a whole number of 1 or more, or "auto"',
    "trace_units": (
        f"expected 0 (no limit) or at least {MIN_TRACE_UNITS}: holder walks at 0, 10 and 30 "
        "traced units, then the unit that locates a growing container's line"
    ),
}


def check_setting(name: str, value: Any) -> Any:
    """``value`` checked (and converted, for sizes and "auto") for the setting ``name``.

    Raises ``SettingError``. Values come typed: a face that reads text (the
    command line) turns digits into numbers first, so that ``warmup = "5"``
    in TOML and ``--warmup 5`` mean what each of them says.
    """
    if name in ("timeout", "duration", "stop_timeout", "time_slice", "wait"):
        if _seconds(value):
            return float(value)
        raise SettingError(name, value, SECONDS)
    checked: Any = None
    if name == "iterations" and _whole(value, 1):
        checked = value
    elif name == "warmup" and (value == "auto" or _whole(value, 0)):
        checked = value
    elif name == "frames" and _whole(value, 1, MAX_FRAMES):
        checked = value
    elif name == "top" and _whole(value, 0):
        checked = value
    elif name in ("memory_limit", "max_growth"):
        checked = _size(value)
        if name == "memory_limit" and checked == 0:
            checked = None
    elif name == "holders" and isinstance(value, bool):
        checked = value
    elif name == "mode" and value in ("fast", "full"):
        checked = value
    elif name == "sample" and (value == "auto" or _whole(value, 1)):
        checked = 0 if value == "auto" else value
    elif name == "trace_units" and (value == 0 or _whole(value, MIN_TRACE_UNITS)):
        checked = value
    elif name not in EXPECTED:
        raise KeyError(f"no rule for the setting {name!r}")
    if checked is None:
        raise SettingError(name, value, EXPECTED[name])
    return checked
