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
# container (after the third) and the lines' rates, while a worker that runs
# for days pays tracemalloc's price once.
DEFAULT_TRACE_UNITS = 60
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
    # own) and why it was chosen (see leakscope.interpreter).
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
