"""Task throughput of a real Celery worker, with and without `leakscope run` (issue 7).

A real Redis on a free loopback port; a prefork worker with 2 children and
`-O fair`; TASKS tasks queued before the worker starts. The clock runs from
the first task taken off the queue to the queue's last task taken (start-up
and shutdown, which leakscope lengthens, are not task time). Each
configuration runs ROUNDS times, alternating, and the median counts:

- plain: `celery -A celery_tasks worker ...`
- default: `leakscope run -- celery ...` (`--sample auto`: each pool child is
  watched with cheap counters and traced only once they grow)
- every-unit: `--sample 1`, every unit traced after warm-up
- sample-2: `--sample 2`, one pool child of the two traced, the other watched
- with BENCH_EXTRA=1, where the cost goes: glibc's tcache off alone, and the
  agent armed but never past warm-up

    .venv/bin/python bench/workers_bench.py
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TASKS = int(os.environ.get("BENCH_TASKS", "4000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CELERY = [str(BIN / "celery"), "-A", "celery_tasks", "worker", "--pool=prefork",
          "--concurrency=2", "-O", "fair", "--loglevel=WARNING"]
RUN = [sys.executable, "-m", "leakscope", "run", "--quiet", "--stop-timeout", "60"]
CONFIGS = {
    "plain": [],
    "default": RUN,  # --sample auto
    "every-unit": RUN + ["--sample", "1"],
    "sample-2": RUN + ["--sample", "2"],
}


if os.environ.get("BENCH_EXTRA"):
    # Where the cost goes: glibc's tcache off alone, and the agent armed but
    # never past warm-up (per-unit counters and event lines only).
    CONFIGS["tcache-off"] = ["env", "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"]
    CONFIGS["armed"] = RUN + ["--warmup", "1000000"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_round(
    name: str, prefix: list[str], redis_url: str, client: Any, workdir: Path,
) -> tuple[float, float]:
    from celery import Celery

    client.flushall()
    app = Celery(broker=redis_url)
    for i in range(TASKS):
        app.send_task("celery_tasks.render", args=[i], ignore_result=True)
    env = {**os.environ, "LEAKSCOPE_BENCH_BROKER": redis_url,
           "PYTHONPATH": str(ROOT / "bench"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    leakscope = prefix[:1] == [sys.executable]
    args = prefix + (["--json", str(workdir / f"{name}.json"), "--"] if leakscope else []) + CELERY
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    started: float | None = None
    half: float | None = None
    while True:
        left = client.llen("celery")
        now = time.perf_counter()
        if started is None and left < TASKS:
            started, first_left = now, left
        if half is None and left <= TASKS // 2:
            half, half_left = now, left
        if left == 0:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: worker exited early")
        time.sleep(0.01)
    proc.send_signal(15)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    assert started is not None and half is not None  # set before the queue reached 0
    # Per task over the whole run, and over its second half (steady state:
    # warm-up and the early holder walks are behind it).
    return (now - started) / max(1, first_left), (now - half) / max(1, half_left)


def main() -> None:
    from redis import Redis

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="leakscope-bench-"))
    server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL)
    client = Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.05)
    url = f"redis://127.0.0.1:{port}/0"
    traced: dict[str, list[str]] = {name: [] for name in CONFIGS}
    per_task: dict[str, list[float]] = {name: [] for name in CONFIGS}
    steady: dict[str, list[float]] = {name: [] for name in CONFIGS}
    try:
        for _ in range(ROUNDS):
            for name, prefix in CONFIGS.items():
                whole, second_half = one_round(name, prefix, url, client, workdir)
                per_task[name].append(whole)
                steady[name].append(second_half)
                traced[name].append(_traced(workdir / f"{name}.json"))
    finally:
        server.terminate()
        server.wait()
    print(f"Celery prefork, 2 children, {TASKS} tasks, median of {ROUNDS} rounds")
    for title, table in (("whole run", per_task), ("second half (steady state)", steady)):
        plain = statistics.median(table["plain"])
        print(f" {title}:")
        for name, values in table.items():
            median = statistics.median(values)
            print(f"  {name:12s} {median * 1000:7.3f} ms/task  {median / plain:5.2f}x plain  "
                  f"({', '.join(f'{v * 1000:.3f}' for v in values)})")
    print(" traced units per pool child, each round (units done in brackets):")
    for name, rounds in traced.items():
        if any(rounds):
            print(f"  {name:12s} {' | '.join(rounds)}")


def _traced(path: Path) -> str:
    """How much of each pool child leakscope traced in one round."""
    import json

    if not path.exists():
        return ""
    children = [p["process"] for p in json.loads(path.read_text())["processes"]
                if p["process"].get("role") == "celery pool child"]
    return ", ".join(f"{c.get('traced_units', 0)} ({c.get('units', 0)})" for c in children)


if __name__ == "__main__":
    main()
