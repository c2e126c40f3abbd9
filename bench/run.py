"""`make bench`: the cost of tracing and how soon the verdict settles, in one run.

Three measurements, each a ratio of figures taken in this same run (absolute
times depend on the machine; ratios much less so):

(a) heap size: the per-loop cost of ``leakscope trace`` on a worker whose
    setup() built 1,000,000 live objects, against the same worker with none;
    and the whole-run extra cost (holder search and gc object counts run at a
    few checkpoints, one full collection at the end).
(b) overhead: an allocation-heavy loop (scenarios/heavy_churn.py) untraced,
    with tracemalloc alone, and under ``leakscope trace`` (its measured window,
    and the whole command).
(c) verdict stability: for every scenario, the number of measured loops from
    which the verdict (leak and kind) no longer changes.

Prints a table per measurement and writes bench/results/issue2.json.

    .venv/bin/python bench/run.py
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from leakscope.analysis import analyse  # noqa: E402
from leakscope.analysis.stats import MIN_LOOPS  # noqa: E402
from leakscope.measure import counters  # noqa: E402
from leakscope.model import runfile  # noqa: E402
from leakscope.model.runfile import Run  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "issue2.json"
PLAIN = ROOT / "bench" / "plain_loop.py"
SCENARIOS = ROOT / "scenarios"
WARMUP = 5
FRAMES = 10  # leakscope's default --frames

# (a) The worker: a million small lists (gc-tracked, each with its own int),
# and a loop that allocates and drops a fixed amount.
HEAP_WORKER = '''\
"""setup() builds sys.argv[1] live objects; iteration() allocates a little and keeps nothing."""
import sys

BIG: list = []


def setup() -> None:
    BIG.extend([i] for i in range(int(sys.argv[1])))


def iteration() -> None:
    rows = [{"id": i, "name": f"row-{i}"} for i in range(200)]
    ",".join(row["name"] for row in rows)
'''
HEAP_OBJECTS = 1_000_000
# Two run lengths: the difference of their harness totals is the harness's cost
# per loop, with the one-off costs (checkpoints, the final collection) cancelled.
HEAP_SHORT, HEAP_LONG = 40, 120
HEAP_REPEATS = 3
HEAP_TARGET = 1.2

CHURN_ITERATIONS = 30
CHURN_REPEATS = 3
CHURN_TARGET = 1.10

STABILITY_ITERATIONS = 200
SCENARIO_ARGS = {"tick_consumer.py": ["orders"]}


# --------------------------------------------------------------- running things


def leakscope_trace(
    target: Path, iterations: int, *options: str, args: Sequence[str] = (), cwd: Path = ROOT
) -> tuple[Run, float]:
    """One whole ``leakscope trace`` command: the run it saved and its wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        command = [sys.executable, "-m", "leakscope", "trace", str(target), "--quiet",
                   "--iterations", str(iterations), "--warmup", str(WARMUP), "--json", str(out),
                   *options]
        if args:
            command += ["--", *args]
        started = time.perf_counter()
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr}")
        return runfile.load(out), wall


def plain_loop(
    worker: Path, iterations: int, *, tracemalloc_frames: int = 0, args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> tuple[dict[str, Any], float]:
    """The worker's loop in a plain python process: its per-loop times and wall time."""
    command = [sys.executable, str(PLAIN), str(worker), str(iterations), str(WARMUP)]
    if tracemalloc_frames:
        command += ["--tracemalloc", str(tracemalloc_frames)]
    command += ["--", *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    return json.loads(proc.stdout), time.perf_counter() - started


def measured_seconds(run: Run) -> list[float]:
    return [loop.seconds or 0.0 for loop in run.measured]


def harness_seconds(run: Run) -> float:
    return float(run.observations.get("harness_seconds", 0.0))


def window_seconds(run: Run) -> float:
    """The measured window as the run file reports it: the loops plus the harness."""
    return sum(measured_seconds(run)) + harness_seconds(run)


def walk_seconds(run: Run) -> float:
    return float((run.observations.get("holder_search") or {}).get("walk_seconds") or 0.0)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


# ------------------------------------------------------------ (a) heap size


def bench_heap(workdir: Path) -> dict[str, Any]:
    worker = workdir / "heap_worker.py"
    worker.write_text(HEAP_WORKER)
    result: dict[str, Any] = {
        "objects": HEAP_OBJECTS, "iterations": [HEAP_SHORT, HEAP_LONG], "repeats": HEAP_REPEATS,
    }
    configs = (("none", 0), ("million", HEAP_OBJECTS))
    seen: dict[str, dict[str, list[Any]]] = {label: {} for label, _ in configs}
    for _ in range(HEAP_REPEATS):  # interleaved, so that a busy moment hits both alike
        for label, objects in configs:
            args = [str(objects)]
            short, _ = leakscope_trace(worker, HEAP_SHORT, args=args, cwd=workdir)
            long, wall = leakscope_trace(worker, HEAP_LONG, args=args, cwd=workdir)
            plain, plain_wall = plain_loop(worker, HEAP_LONG, args=args)
            # The harness total less the holder checkpoints (fork + walk, which
            # vary a lot from run to run): the rest is per-loop work plus a few
            # one-off costs that the difference of two run lengths cancels.
            per_loop = (
                (harness_seconds(long) - walk_seconds(long))
                - (harness_seconds(short) - walk_seconds(short))
            ) / (HEAP_LONG - HEAP_SHORT)
            for key, value in {
                "harness_per_loop_s": per_loop,
                "harness_short_s": harness_seconds(short),
                "harness_long_s": harness_seconds(long),
                "worker_loop_median_s": statistics.median(measured_seconds(long)),
                "untraced_loop_median_s": statistics.median(plain["loop_seconds"]),
                "holder_walk_s": walk_seconds(long),
                "leakscope_wall_s": wall,
                "plain_wall_s": plain_wall,
                "setup_s": plain["setup_seconds"],
            }.items():
                seen[label].setdefault(key, []).append(value)
            seen[label]["gc_objects"] = [max((loop.gc_objects or 0 for loop in long.loops),
                                             default=0)]
            seen[label]["verdict"] = [
                [long.verdict.leak, long.verdict.kind] if long.verdict else None
            ]
    for label, _ in configs:
        best = {key: min(values) if key not in ("gc_objects", "verdict") else values[-1]
                for key, values in seen[label].items()}
        # A difference of two noisy totals: the median of the repeats, not the least.
        best["harness_per_loop_s"] = statistics.median(seen[label]["harness_per_loop_s"])
        result[label] = {
            **best,
            "per_loop_s": best["worker_loop_median_s"] + best["harness_per_loop_s"],
            "all": seen[label],
        }
    none, million = result["none"], result["million"]
    result["per_loop_ratio"] = ratio(million["per_loop_s"], none["per_loop_s"])
    result["worker_loop_ratio"] = ratio(million["worker_loop_median_s"],
                                        none["worker_loop_median_s"])
    result["harness_per_loop_ratio"] = ratio(million["harness_per_loop_s"],
                                             none["harness_per_loop_s"])
    # What leakscope adds to a whole run, beyond the worker's own time (the plain
    # run of the same loops, setup included), with the big heap against without.
    for data in (none, million):
        data["whole_run_overhead_s"] = data["leakscope_wall_s"] - data["plain_wall_s"]
    result["whole_run_extra_s"] = million["whole_run_overhead_s"] - none["whole_run_overhead_s"]
    result["whole_run_overhead_ratio"] = ratio(million["whole_run_overhead_s"],
                                               none["whole_run_overhead_s"])
    result["target"] = HEAP_TARGET
    result["met"] = result["per_loop_ratio"] <= HEAP_TARGET
    table(
        f"(a) per-loop cost with {HEAP_OBJECTS:,} live objects vs none "
        f"({HEAP_LONG} measured loops; harness per loop from {HEAP_SHORT} vs {HEAP_LONG}; "
        f"best of {HEAP_REPEATS})",
        ["", "none", "1M objects", "ratio"],
        [
            ["worker loop, traced (median ms)", f"{none['worker_loop_median_s'] * 1e3:.3f}",
             f"{million['worker_loop_median_s'] * 1e3:.3f}", result["worker_loop_ratio"]],
            ["harness per loop, checkpoints out (ms)",
             f"{none['harness_per_loop_s'] * 1e3:.3f}",
             f"{million['harness_per_loop_s'] * 1e3:.3f}", result["harness_per_loop_ratio"]],
            ["per loop, total (ms)", f"{none['per_loop_s'] * 1e3:.3f}",
             f"{million['per_loop_s'] * 1e3:.3f}",
             f"{result['per_loop_ratio']} (target <= {HEAP_TARGET})"],
            ["untraced loop (median ms)", f"{none['untraced_loop_median_s'] * 1e3:.3f}",
             f"{million['untraced_loop_median_s'] * 1e3:.3f}", ""],
            ["holder walk, all checkpoints (s)", f"{none['holder_walk_s']:.2f}",
             f"{million['holder_walk_s']:.2f}", ""],
            ["whole run: leakscope wall (s)", f"{none['leakscope_wall_s']:.2f}",
             f"{million['leakscope_wall_s']:.2f}", ""],
            ["whole run: plain python wall (s)", f"{none['plain_wall_s']:.2f}",
             f"{million['plain_wall_s']:.2f}", ""],
            ["whole run: leakscope's extra (s)", f"{none['whole_run_overhead_s']:.2f}",
             f"{million['whole_run_overhead_s']:.2f}", result["whole_run_overhead_ratio"]],
        ],
    )
    return result


# ------------------------------------------------------------ (b) overhead


def bench_overhead() -> dict[str, Any]:
    worker = SCENARIOS / "heavy_churn.py"
    n = CHURN_ITERATIONS
    # leakscope runs its child with glibc's tcache off (exact malloc counters);
    # tracemalloc alone is also timed that way, to tell that cost apart.
    tunables = {"GLIBC_TUNABLES": counters.exact_malloc_tunables(os.environ.get("GLIBC_TUNABLES"))}
    samples: dict[str, list[float]] = {
        "untraced": [], "tracemalloc": [], "tracemalloc_tcache_off": [],
        "leakscope_window": [], "leakscope_loops": [], "leakscope_harness": [],
        "leakscope_whole": [], "leakscope_no_holders_window": [],
    }
    for _ in range(CHURN_REPEATS):  # interleaved, so that a busy moment hits all alike
        samples["untraced"].append(sum(plain_loop(worker, n)[0]["loop_seconds"]))
        samples["tracemalloc"].append(
            sum(plain_loop(worker, n, tracemalloc_frames=FRAMES)[0]["loop_seconds"])
        )
        samples["tracemalloc_tcache_off"].append(
            sum(plain_loop(worker, n, tracemalloc_frames=FRAMES, env=tunables)[0]["loop_seconds"])
        )
        run, wall = leakscope_trace(worker, n)
        samples["leakscope_window"].append(window_seconds(run))
        samples["leakscope_loops"].append(sum(measured_seconds(run)))
        samples["leakscope_harness"].append(harness_seconds(run))
        samples["leakscope_whole"].append(wall)
        bare, _ = leakscope_trace(worker, n, "--no-holders")
        samples["leakscope_no_holders_window"].append(window_seconds(bare))
    best = {key: min(values) for key, values in samples.items()}
    base = best["untraced"]
    result: dict[str, Any] = {
        "worker": "scenarios/heavy_churn.py", "iterations": n, "repeats": CHURN_REPEATS,
        "frames": FRAMES, "seconds_min": best, "seconds_all": samples,
        "ratios_to_untraced": {key: ratio(value, base) for key, value in best.items()},
        "window_vs_tracemalloc": ratio(best["leakscope_window"], best["tracemalloc"]),
        "no_holders_window_vs_tracemalloc": ratio(best["leakscope_no_holders_window"],
                                                  best["tracemalloc"]),
        "loops_only_vs_tracemalloc": ratio(best["leakscope_loops"], best["tracemalloc"]),
        "tcache_off_vs_tracemalloc": ratio(best["tracemalloc_tcache_off"], best["tracemalloc"]),
        "target": CHURN_TARGET,
    }
    result["met"] = result["window_vs_tracemalloc"] <= CHURN_TARGET
    r = result["ratios_to_untraced"]
    table(
        f"(b) {n} loops of scenarios/heavy_churn.py, best of {CHURN_REPEATS} "
        "(ratio to untraced)",
        ["", "seconds", "x untraced"],
        [
            ["untraced", f"{best['untraced']:.3f}", r["untraced"]],
            [f"tracemalloc only ({FRAMES} frames)", f"{best['tracemalloc']:.3f}",
             r["tracemalloc"]],
            ["tracemalloc only, tcache off", f"{best['tracemalloc_tcache_off']:.3f}",
             r["tracemalloc_tcache_off"]],
            ["leakscope: worker loops only", f"{best['leakscope_loops']:.3f}",
             r["leakscope_loops"]],
            ["leakscope: harness only", f"{best['leakscope_harness']:.3f}",
             r["leakscope_harness"]],
            ["leakscope window (loops + harness)", f"{best['leakscope_window']:.3f}",
             r["leakscope_window"]],
            ["leakscope window, --no-holders", f"{best['leakscope_no_holders_window']:.3f}",
             r["leakscope_no_holders_window"]],
            ["leakscope whole run (wall)", f"{best['leakscope_whole']:.3f}",
             r["leakscope_whole"]],
        ],
    )
    print(f"  leakscope window / tracemalloc only: {result['window_vs_tracemalloc']} "
          f"(target <= {CHURN_TARGET})")
    return result


# --------------------------------------------------- (c) verdict stability


def expected(path: Path) -> dict[str, str]:
    for line in path.read_text().splitlines():
        if line.startswith("Expected:"):
            return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)
    return {}


def prefix(run: Run, measured: int) -> Run:
    """The run as if it had stopped after ``measured`` measured loops.

    Observations made once at the end (the final collection, the holder
    checkpoints) stay those of the whole run: only the loop series is cut.
    """
    kept, seen = [], 0
    for loop in run.loops:
        if not loop.warmup:
            if seen == measured:
                break
            seen += 1
        kept.append(loop)
    return replace(run, loops=kept)


def stable_from(run: Run) -> tuple[int | None, list[tuple[bool, str]]]:
    """The first prefix length from which every longer prefix has the final verdict."""
    total = len(run.measured)
    verdicts = []
    for k in range(1, total + 1):
        # The whole analysis, as the CLI runs it (the policies that turn a rising
        # floor into "undecided" included), on a copy: it marks sites and holders.
        verdict = analyse(copy.deepcopy(prefix(run, k))).verdict
        assert verdict is not None
        verdicts.append((verdict.leak, verdict.kind))
    final = verdicts[-1]
    stable = None
    for k in range(total, 0, -1):
        if verdicts[k - 1] != final:
            break
        stable = k
    return stable, verdicts


def stability_of(path: Path) -> dict[str, Any]:
    run, wall = leakscope_trace(path, STABILITY_ITERATIONS, args=SCENARIO_ARGS.get(path.name, ()))
    stable, verdicts = stable_from(run)
    want = expected(path)
    final = verdicts[-1]
    changes = sum(1 for a, b in zip(verdicts, verdicts[1:], strict=False) if a != b)
    other = [k for k in range(MIN_LOOPS, len(verdicts) + 1) if verdicts[k - 1] != final]
    # A prefix keeps the whole run's holder checkpoints (a deque seen full at the end
    # is not "filling" in the prefix), so check the longest disagreeing prefix
    # against a real run of that length, which has checkpoints of its own.
    check = None
    if other and other[-1] > MIN_LOOPS:
        real, _ = leakscope_trace(path, other[-1], args=SCENARIO_ARGS.get(path.name, ()))
        assert real.verdict is not None
        check = {"iterations": other[-1], "verdict": [real.verdict.leak, real.verdict.kind]}
    return {
        "scenario": path.name,
        "real_run_at_last_other": check,
        "expected": [want.get("leak") == "yes", want.get("kind")],
        "final": list(final),
        "recorded_verdict": [run.verdict.leak, run.verdict.kind] if run.verdict else None,
        "matches_expected": final == (want.get("leak") == "yes", want.get("kind")),
        "stable_from": stable,
        "verdict_changes": changes,
        "other_verdict_at": _ranges(other),
        "measured": len(run.measured),
        "wall_s": round(wall, 2),
    }


def bench_stability() -> dict[str, Any]:
    paths = sorted(p for p in SCENARIOS.glob("*.py") if "Expected:" in p.read_text())
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        rows = list(pool.map(stability_of, paths))
    leaks = [r["stable_from"] for r in rows if r["final"][0] and r["stable_from"]]
    result = {
        "iterations": STABILITY_ITERATIONS, "min_loops": MIN_LOOPS, "scenarios": rows,
        "max_stable_from_leaks": max(leaks, default=None),
        "max_stable_from_all": max((r["stable_from"] or 0 for r in rows), default=None),
        "all_match_expected": all(r["matches_expected"] for r in rows),
    }
    table(
        f"(c) measured loops until the verdict is stable ({STABILITY_ITERATIONS} measured, "
        f"the whole analysis on every prefix; nothing is decided below {MIN_LOOPS})",
        ["scenario", "expected", "final", "stable from", "other verdict at",
         "real run there"],
        [
            [r["scenario"], "/".join(map(_word, r["expected"])),
             "/".join(map(_word, r["final"])) + ("" if r["matches_expected"] else "  WRONG"),
             r["stable_from"],
             ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in r["other_verdict_at"]),
             _real(r["real_run_at_last_other"])]
            for r in rows
        ],
    )
    return result


def _ranges(values: list[int]) -> list[list[int]]:
    """[5, 6, 7, 10] as [[5, 7], [10, 10]]: the prefix lengths with another verdict."""
    spans: list[list[int]] = []
    for value in values:
        if spans and value == spans[-1][1] + 1:
            spans[-1][1] = value
        else:
            spans.append([value, value])
    return spans


def _real(check: dict[str, Any] | None) -> str:
    if check is None:
        return ""
    return f"{check['iterations']}: " + "/".join(map(_word, check["verdict"]))


def _word(value: Any) -> str:
    return {True: "leak", False: "no leak"}.get(value, str(value))


# ---------------------------------------------------------------------- main


def main() -> None:
    started = time.perf_counter()
    machine: dict[str, Any] = {
        "nproc": os.cpu_count(), "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "load_average_at_start": os.getloadavg(),
    }
    print(f"leakscope bench: {machine['nproc']} CPUs, Python {machine['python']}, "
          f"{machine['platform']}, load {machine['load_average_at_start'][0]:.2f}")
    sections: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        heap = bench_heap(Path(tmp))
    sections["heap"] = round(time.perf_counter() - started, 1)
    overhead = bench_overhead()
    sections["overhead"] = round(time.perf_counter() - started - sum(sections.values()), 1)
    stability = bench_stability()
    sections["stability"] = round(time.perf_counter() - started - sum(sections.values()), 1)
    machine["load_average_at_end"] = os.getloadavg()
    results = {
        "machine": machine, "heap": heap, "overhead": overhead, "stability": stability,
        "bench_seconds": round(time.perf_counter() - started, 1), "section_seconds": sections,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n(a) per-loop ratio {heap['per_loop_ratio']} (target <= {HEAP_TARGET}): "
          f"{'met' if heap['met'] else 'MISSED'}")
    print(f"(b) window / tracemalloc {overhead['window_vs_tracemalloc']} "
          f"(target <= {CHURN_TARGET}): {'met' if overhead['met'] else 'MISSED'}")
    print(f"(c) verdicts stable from at most {stability['max_stable_from_all']} measured loops; "
          f"all as expected: {stability['all_match_expected']}")
    print(f"results: {RESULTS.relative_to(ROOT)} ({results['bench_seconds']} s: "
          + ", ".join(f"{name} {seconds} s" for name, seconds in sections.items()) + ")")


if __name__ == "__main__":
    main()
