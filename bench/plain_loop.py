"""A worker's loop without leakscope: the baseline that bench/run.py compares against.

Loads a worker file the way leakscope does (its directory on ``sys.path``, the
arguments after ``--`` in ``sys.argv``), calls ``setup()``, the warm-up loops,
then times ``iteration()`` over the measured loops, optionally with
tracemalloc started after warm-up (as leakscope starts it) at the same frame
depth and with no snapshots. Prints one JSON object.

    python bench/plain_loop.py WORKER.py ITERATIONS WARMUP [--tracemalloc FRAMES] [-- ARGS]
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from types import ModuleType


def load(path: str, args: list[str]) -> ModuleType:
    sys.argv = [path, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location("bench_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_worker"] = module
    spec.loader.exec_module(module)
    return module


def run_loops(iteration: Callable[[], object], count: int) -> list[float]:
    """The same shape as leakscope.measure.harness.run_loops: one call per loop, timed."""
    times = []
    clock = time.perf_counter
    last = clock()
    for _ in range(count):
        iteration()
        now = clock()
        times.append(now - last)
        last = now
    return times


def like_runpy(call: Callable[[], list[float]]) -> list[float]:
    """One frame here and the caller's lambda make two: iteration() then runs under five
    frames, as under ``python -m leakscope.measure.harness`` (runpy's two, the harness module,
    main, run_loops). tracemalloc pays per frame it captures, so depth must match."""
    return call()


def main() -> None:
    argv = sys.argv[1:]
    args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, args = argv[:cut], argv[cut + 1:]
    path, iterations, warmup = argv[0], int(argv[1]), int(argv[2])
    frames = int(argv[argv.index("--tracemalloc") + 1]) if "--tracemalloc" in argv else 0
    started = time.perf_counter()
    module = load(path, args)
    setup = getattr(module, "setup", None)
    if callable(setup):
        setup()
    setup_seconds = time.perf_counter() - started
    for _ in range(warmup):
        module.iteration()
    if frames:
        tracemalloc.start(frames)
    times = like_runpy(lambda: run_loops(module.iteration, iterations))
    if frames:
        tracemalloc.stop()
    print(json.dumps({"setup_seconds": setup_seconds, "loop_seconds": times}))


if __name__ == "__main__":
    main()
