"""Fast mode with the memray locator against the untraced worker (issue 13's targets).

The worker is the JSON churner (parse 1,500 records, sort, rebuild, dump; about
5 ms a loop), with and without one small dict leaked per loop. Every figure is a
ratio of wall times measured in this one run, start-up included:

- untraced: the same number of loops in a plain ``python`` process;
- ``leakscope trace --fast -n 600`` with the memray locator (``LEAKSCOPE_LOCATOR=auto``)
  and with tracemalloc alone (``LEAKSCOPE_LOCATOR=tracemalloc``);
- full mode on the leaking worker (50 loops): fast mode must reach its verdict,
  kind and user line.

Targets: leak <= 2x untraced, no leak <= 1.3x.

    .venv/bin/python bench/memray_bench.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ITERATIONS = 600
WARMUP = 5

CHURN = textwrap.dedent(
    '''
    import json
    import random

    _rng = random.Random(7)
    KEEP = []
    LEAK = {leak}


    def iteration():
        records = [{{"id": i, "name": f"user-{{i}}", "score": _rng.random(), "tags": ["a", "b"]}}
                   for i in range(1500)]
        parsed = json.loads(json.dumps(records))
        parsed.sort(key=lambda r: r["score"])
        json.dumps([{{**r, "rank": n}} for n, r in enumerate(parsed)])
        if LEAK:
            KEEP.append({{"n": len(KEEP)}})
    '''
)

PLAIN = textwrap.dedent(
    '''
    import sys
    sys.path.insert(0, {dir!r})
    import {name} as worker
    for _ in range({loops}):
        worker.iteration()
    '''
)


def _time(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - started


def untraced(tmp: Path, name: str, loops: int) -> float:
    code = PLAIN.format(dir=str(tmp), name=name, loops=loops)
    return _time([sys.executable, "-c", code], tmp)


def traced(tmp: Path, worker: Path, out: Path, locator: str, *extra: str) -> tuple[float, dict]:
    args = [sys.executable, "-m", "leakscope", "trace", str(worker), "--quiet",
            "--warmup", str(WARMUP), "--json", str(out), *extra]
    seconds = _time(args, tmp, {"LEAKSCOPE_LOCATOR": locator})
    return seconds, json.loads(out.read_text())


def _top_line(run: dict) -> str | None:
    for site in run["sites"]:
        if site["growing"] and site["user_frame"]:
            return f"{Path(site['user_frame']['file']).name}:{site['user_frame']['line']}"
    return None


def _outcome(run: dict) -> list[Any]:
    return [run["verdict"]["leak"], run["verdict"]["kind"], _top_line(run),
            (run["observations"].get("locator") or {}).get("engine")]


def main() -> dict:
    results: dict[str, Any] = {"iterations": ITERATIONS, "warmup": WARMUP}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for label, leak in (("leak", True), ("no_leak", False)):
            worker = tmp / f"churn_{label}.py"
            worker.write_text(CHURN.format(leak=leak))
            base = untraced(tmp, worker.stem, ITERATIONS + WARMUP)
            row: dict[str, Any] = {"untraced_s": round(base, 2)}
            for locator in ("auto", "tracemalloc"):
                seconds, run = traced(tmp, worker, tmp / f"{label}-{locator}.json", locator,
                                      "--fast", "-n", str(ITERATIONS))
                key = "memray" if locator == "auto" else "tracemalloc"
                row[key] = {"seconds": round(seconds, 2), "ratio": round(seconds / base, 2),
                            "outcome": _outcome(run)}
            if leak:
                _, full = traced(tmp, worker, tmp / "full.json", "tracemalloc", "-n", "50")
                row["full_mode_outcome"] = _outcome(full)
            results[label] = row
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
