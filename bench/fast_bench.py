"""Fast mode against the untraced worker: whole runs timed in one go.

The worker is the JSON-churning loop of issue 8 (parse 1,500 records, sort,
rebuild, dump). Each figure is a ratio of wall times measured in this run:

- untraced: the same number of loops in a plain ``python`` process;
- ``leakscope trace --fast``: the whole command, start-up included;
- the same worker with one small object leaked per loop, in fast and full mode
  (verdict, kind and top user line must agree);
- the per-loop cost of fast mode with 1,000,000 live objects against none.

    .venv/bin/python bench/fast_bench.py
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ITERATIONS = 400
WARMUP = 5

CHURN = textwrap.dedent(
    '''
    import json
    import random

    _rng = random.Random(7)
    KEEP = []
    LEAK = {leak}
    BIG = []


    def setup():
        if {big}:
            BIG.extend((i, str(i)) for i in range(500_000))


    def iteration():
        records = [{{"id": i, "name": f"user-{{i}}", "score": _rng.random(), "tags": ["a", "b"]}}
                   for i in range(1500)]
        parsed = json.loads(json.dumps(records))
        parsed.sort(key=lambda r: r["score"])
        json.dumps([{{**r, "rank": n}} for n, r in enumerate(parsed)])
        if LEAK:
            KEEP.append(object())
    '''
)

PLAIN = textwrap.dedent(
    '''
    import sys
    sys.path.insert(0, {dir!r})
    import {name} as worker
    worker.setup()
    for _ in range({loops}):
        worker.iteration()
    '''
)


def _write(tmp: Path, name: str, leak: bool, big: bool = False) -> Path:
    path = tmp / f"{name}.py"
    path.write_text(CHURN.format(leak=leak, big=big))
    return path


def _time(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def untraced(tmp: Path, name: str) -> float:
    code = PLAIN.format(dir=str(tmp), name=name, loops=ITERATIONS + WARMUP)
    return _time([sys.executable, "-c", code], tmp)


def leakscope(tmp: Path, worker: Path, out: Path, *extra: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "leakscope", "trace", str(worker), "--quiet",
            "--warmup", str(WARMUP), "--json", str(out), *extra]
    seconds = _time(args, tmp)
    return seconds, json.loads(out.read_text())


def _top_line(run: dict) -> str | None:
    for site in run["sites"]:
        if site["growing"] and site["user_frame"]:
            return f"{Path(site['user_frame']['file']).name}:{site['user_frame']['line']}"
    return None


def _per_loop(run: dict) -> float:
    loops = [loop for loop in run["loops"] if loop.get("phase") == "detect"]
    return statistics.median(loop["seconds"] for loop in loops)


def main() -> dict:
    results: dict = {"iterations": ITERATIONS, "warmup": WARMUP}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        clean = _write(tmp, "churn_clean", leak=False)
        leaky = _write(tmp, "churn_leaky", leak=True)
        big = _write(tmp, "churn_big", leak=False, big=True)
        n = str(ITERATIONS)
        base_clean = untraced(tmp, "churn_clean")
        fast_clean, run_clean = leakscope(tmp, clean, tmp / "a.json", "--fast", "-n", n)
        base_leaky = untraced(tmp, "churn_leaky")
        fast_leaky, run_fast = leakscope(tmp, leaky, tmp / "b.json", "--fast", "-n", n)
        full_leaky, run_full = leakscope(tmp, leaky, tmp / "c.json", "-n", "50")
        _, run_big = leakscope(tmp, big, tmp / "d.json", "--fast", "-n", "100")
        _, run_small = leakscope(tmp, clean, tmp / "e.json", "--fast", "-n", "100")
    results["no_leak"] = {
        "untraced_s": round(base_clean, 2), "fast_s": round(fast_clean, 2),
        "ratio": round(fast_clean / base_clean, 2),
        "verdict": run_clean["verdict"]["leak"], "traced_loops": sum(
            1 for loop in run_clean["loops"] if loop.get("phase") == "locate"),
    }
    results["leak"] = {
        "untraced_s": round(base_leaky, 2), "fast_s": round(fast_leaky, 2),
        "ratio": round(fast_leaky / base_leaky, 2),
        "fast": [run_fast["verdict"]["leak"], run_fast["verdict"]["kind"], _top_line(run_fast)],
        "full": [run_full["verdict"]["leak"], run_full["verdict"]["kind"], _top_line(run_full)],
        "full_mode_50_loops_s": round(full_leaky, 2),
    }
    small, large = _per_loop(run_small), _per_loop(run_big)
    results["per_loop_1M_objects"] = {
        "none_ms": round(small * 1000, 3), "million_ms": round(large * 1000, 3),
        "ratio": round(large / small, 3),
    }
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
