"""The collector's cost on workers that leak: does the harness's per-loop cost stay flat?

Issue 12, item 3. Two workers that keep what they make, traced in full mode
for thousands of loops:

- ``cache``: a request handler whose library keeps 5 small objects a request
  in a class-level dict, allocated 6 frames below the user's line (as real
  caches are); 4,000 loops;
- ``cycles``: a loop that builds reference cycles (120 blocks a loop) under
  ``gc.disable()``; 2,000 loops.

Every figure is a ratio of figures taken in this one run:

- the harness's cost per loop (``loops[].harness_seconds``, leakscope's own
  time in the measured process before each loop) over loops 100-200 against
  the last tenth of the run (the final loop, with its holder walk and final
  collection, left out); target <= 1.5x. Loops 100-200 still lie among the
  first DIFF_EXACT_LOOPS, diffed one by one, so the bench also compares the
  end with a tenth of the run from its first quarter, where diffs are spaced;
- the whole ``leakscope trace`` command against the same loops untraced in a
  plain python process (``bench/plain_loop.py``), leakscope's start-up (a
  one-loop trace of an empty worker) set aside; target <= 10x.

    .venv/bin/python bench/engine_bench.py [--cache N] [--cycles N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leakscope.model import runfile  # noqa: E402
from leakscope.model.runfile import Run  # noqa: E402

PLAIN = ROOT / "bench" / "plain_loop.py"
RESULTS = ROOT / "bench" / "results" / "engine.json"
WARMUP = 5
FRAMES = 10  # leakscope's default --frames
PER_LOOP_TARGET = 1.5
WHOLE_RUN_TARGET = 10.0

LIBRARY = {
    "__init__.py": '''\
        """A caching library: a worker fills its class-level registry by accident."""
        from regcache.store import Registry


        def remember(request_id, payload):
            return _normalise(request_id, payload)


        def _normalise(request_id, payload):
            return _route(request_id, {k.lower(): v for k, v in payload.items()})


        def _route(request_id, payload):
            return _resolve(request_id, payload)


        def _resolve(request_id, payload):
            return Registry().remember(request_id, payload)
        ''',
    "store.py": '''\
        class Registry:
            entries = {}

            def remember(self, request_id, payload):
                return self._store(request_id, payload)

            def _store(self, request_id, payload):
                key = f"req-{request_id}"
                entry = (key, [request_id, payload["user"]],
                         {"id": request_id, "tag": payload["tag"]})
                Registry.entries[key] = entry
                return entry
        ''',
}

CACHE_WORKER = '''\
    """A request handler: parse, hash, answer; its library's cache keeps every request."""
    import hashlib
    import json
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "site-packages"))
    import regcache  # noqa: E402

    COUNT = [0]
    BLOB = bytes(range(256)) * 1024
    BODY = json.dumps({"User": "ada", "Tag": "x", "items": list(range(50))})


    def iteration():
        COUNT[0] += 1
        payload = json.loads(BODY)
        digest = hashlib.sha256(BODY.encode()).hexdigest()
        size = len(hashlib.sha256(BLOB).digest())
        regcache.remember(COUNT[0], {"User": payload["User"], "Tag": digest[:8]})
        return size
    '''

CYCLES_WORKER = '''\
    """Builds reference cycles with the collector off: 40 dict<->list pairs a loop."""
    import gc
    import hashlib

    BLOB = bytes(range(256)) * 1024


    def setup():
        gc.disable()


    def iteration():
        for i in range(40):
            node = {"id": i}
            node["self"] = [node]
        return hashlib.sha256(BLOB).digest()
    '''

EMPTY_WORKER = '''\
    def iteration():
        pass
    '''


def write_workers(directory: Path) -> dict[str, Path]:
    package = directory / "site-packages" / "regcache"
    package.mkdir(parents=True)
    for name, text in LIBRARY.items():
        (package / name).write_text(textwrap.dedent(text))
    paths = {}
    for name, text in (("cache", CACHE_WORKER), ("cycles", CYCLES_WORKER),
                       ("empty", EMPTY_WORKER)):
        paths[name] = directory / f"{name}_worker.py"
        paths[name].write_text(textwrap.dedent(text))
    return paths


def trace(worker: Path, iterations: int, out: Path) -> tuple[Run, float]:
    command = [sys.executable, "-m", "leakscope", "trace", str(worker), "--quiet",
               "--iterations", str(iterations), "--warmup", str(WARMUP), "--json", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=worker.parent, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr}")
    return runfile.load(out), wall


def untraced(worker: Path, iterations: int, frames: int = 0) -> tuple[float, float]:
    """The same loops in plain python: (seconds of the loops, wall time with start-up).

    ``frames``: with tracemalloc started after warm-up, as leakscope starts it,
    and nothing else: what tracing alone costs the worker.
    """
    command = [sys.executable, str(PLAIN), str(worker), str(iterations), str(WARMUP)]
    if frames:
        command += ["--tracemalloc", str(frames)]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    return sum(json.loads(proc.stdout)["loop_seconds"]), wall


def harness_per_loop(run: Run, first: int, last: int) -> float:
    """leakscope's own seconds per loop over measured loops first..last (positions)."""
    measured = run.measured
    start = measured[first].harness_seconds
    end = measured[last].harness_seconds
    if start is None or end is None:
        raise RuntimeError("this leakscope writes no per-loop harness_seconds")
    return (end - start) / (last - first)


def bench(name: str, worker: Path, iterations: int, startup: float, tmp: Path) -> dict[str, Any]:
    run, wall = trace(worker, iterations, tmp / f"{name}.json")
    loops_untraced, wall_untraced = untraced(worker, iterations)
    loops_tracemalloc, _ = untraced(worker, iterations, frames=FRAMES)
    early = harness_per_loop(run, 100, 200)
    # The first DIFF_EXACT_LOOPS are diffed one by one: the flat stretch the
    # schedule keeps starts after them, so a window there shows it too.
    middle = harness_per_loop(run, iterations // 4, iterations // 4 + iterations // 10)
    tail_from = iterations - iterations // 10
    late = harness_per_loop(run, tail_from, iterations - 1)
    measured = run.measured
    spans = sum(1 for loop in measured if loop.span_from is not None)
    diffs = iterations - sum(loop.index - loop.span_from for loop in measured
                             if loop.span_from is not None)
    verdict = run.verdict
    assert verdict is not None
    result: dict[str, Any] = {
        "iterations": iterations,
        "verdict": [verdict.leak, verdict.kind, verdict.bytes_per_iteration,
                    verdict.blocks_per_iteration],
        "top_site": (f"{run.sites[0].file}:{run.sites[0].line} "
                     f"{run.sites[0].bytes_per_iteration} B/loop") if run.sites else None,
        "harness_per_loop_100_200_s": early,
        f"harness_per_loop_{tail_from}_{iterations - 1}_s": late,
        "per_loop_ratio": round(late / early, 3),
        "harness_per_loop_quarter_s": middle,
        "per_loop_ratio_end_vs_quarter": round(late / middle, 3),
        "harness_total_s": float(run.observations.get("harness_seconds", 0.0)),
        "worker_loops_traced_s": sum(loop.seconds or 0.0 for loop in measured),
        "per_line_diffs": diffs, "diffs_spanning_loops": spans,
        "trace_wall_s": wall, "untraced_loops_s": loops_untraced,
        "untraced_wall_s": wall_untraced, "leakscope_startup_s": startup,
        "whole_run_ratio": round((wall - startup) / loops_untraced, 2),
        "tracemalloc_only_loops_s": loops_tracemalloc,
        "whole_run_vs_tracemalloc_only": round((wall - startup) / loops_tracemalloc, 2),
    }
    result["met"] = (result["per_loop_ratio"] <= PER_LOOP_TARGET
                     and result["whole_run_ratio"] <= WHOLE_RUN_TARGET)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=int, default=4000)
    parser.add_argument("--cycles", type=int, default=2000)
    options = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": {
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        workers = write_workers(tmp)
        _, startup = trace(workers["empty"], 1, tmp / "empty.json")
        results["cache"] = bench("cache", workers["cache"], options.cache, startup, tmp)
        results["cycles"] = bench("cycles", workers["cycles"], options.cycles, startup, tmp)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    for name in ("cache", "cycles"):
        r = results[name]
        tail = next(k for k in r if k.startswith("harness_per_loop_") and "100_200" not in k)
        print(f"{name} ({r['iterations']} loops): verdict {r['verdict']}; top {r['top_site']}")
        print(f"  harness per loop: loops 100-200 {r['harness_per_loop_100_200_s'] * 1e3:.3f} ms, "
              f"{tail[17:-2].replace('_', '-')} {r[tail] * 1e3:.3f} ms: "
              f"{r['per_loop_ratio']}x (target <= {PER_LOOP_TARGET}); against a tenth of the "
              f"run from its first quarter ({r['harness_per_loop_quarter_s'] * 1e3:.3f} ms): "
              f"{r['per_loop_ratio_end_vs_quarter']}x")
        print(f"  whole run {r['trace_wall_s']:.2f} s (start-up {r['leakscope_startup_s']:.2f} s) "
              f"against {r['untraced_loops_s']:.2f} s untraced: {r['whole_run_ratio']}x "
              f"(target <= {WHOLE_RUN_TARGET}); {r['per_line_diffs']} per-line diffs, "
              f"harness {r['harness_total_s']:.2f} s, worker's traced loops "
              f"{r['worker_loops_traced_s']:.2f} s")
        print(f"  the same loops under tracemalloc alone {r['tracemalloc_only_loops_s']:.2f} s: "
              f"leakscope's whole run is {r['whole_run_vs_tracemalloc_only']}x that")
        print(f"  {'met' if r['met'] else 'MISSED'}")
    print(f"results: {RESULTS.relative_to(ROOT)} ({results['bench_seconds']} s)")


if __name__ == "__main__":
    main()
