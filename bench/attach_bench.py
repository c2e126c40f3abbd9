"""`leakscope attach` on a live gunicorn worker: the debugger pause and what an attach costs.

A gunicorn sync worker (scenarios/workers/wsgi_leak.py) is started plainly and fed
by one client at a steady pace. Three phases in one run: before the attach, while
attached (`leakscope attach PID --units N`), after it left. Each phase reports the
request latency (median, p99, max) and the throughput; the attach reports how long
the process was stopped, how long one thread was held, and the worker's RSS before
and after. Ratios are to the phase before, in the same run.

    .venv/bin/python bench/attach_bench.py          # ATTACH_UNITS=200 ATTACH_ROUNDS=3
    ATTACH_APP=wsgi_clean .venv/bin/python bench/attach_bench.py   # RSS with no leak to take out
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UNITS = int(os.environ.get("ATTACH_UNITS", "200"))
ROUNDS = int(os.environ.get("ATTACH_ROUNDS", "3"))
PHASE_SECONDS = 3.0
# The app served: wsgi_leak (the default) or wsgi_clean, whose RSS needs no leak taken out.
APP = os.environ.get("ATTACH_APP", "wsgi_leak")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, user: str) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/orders?user={user}",
                                timeout=30) as response:
        response.read()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Client:
    """One client at a steady pace; latencies are kept with their start times."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            start = time.monotonic()
            _get(self.port, f"u{n}")
            self.samples.append((start, time.monotonic() - start))
            n += 1
            time.sleep(0.002)

    def __enter__(self) -> Client:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[float]:
        return [took for at, took in self.samples if start <= at < end]


def _figures(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 1),
        "req_per_s": round(len(latencies) / seconds, 1),
    }


def one_round() -> dict[str, Any]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    master = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "--chdir",
         str(ROOT / "scenarios" / "workers"), "-w", "1", "-k", "sync", "-b",
         f"127.0.0.1:{port}", "--timeout", "120", f"{APP}:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(port, "warm")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.1)
        worker = int(Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()[0])
        for _ in range(300):
            _get(port, "warm")
        rss_before = _rss(worker)
        with tempfile.TemporaryDirectory() as tmp, Client(port) as client:
            t0 = time.monotonic()
            time.sleep(PHASE_SECONDS)
            t1 = time.monotonic()
            out = Path(tmp) / "run.json"
            done = subprocess.run(
                [sys.executable, "-m", "leakscope", "attach", str(worker), "--units", str(UNITS),
                 "--json", str(out)], capture_output=True, text=True, timeout=300,
            )
            t2 = time.monotonic()
            time.sleep(PHASE_SECONDS)
            t3 = time.monotonic()
            if done.returncode not in (0, 1):
                raise RuntimeError(f"attach failed: {done.stderr.strip()[-300:]}")
            run = json.loads(out.read_text())
        attach = run["observations"]["attach"]
        rss_after = _rss(worker)
        process = run["processes"][0]
        # The RSS just before tracemalloc started (older runs: the first unit's sample).
        rss_tracing = process["observations"].get("rss_before_tracing_bytes") \
            or process["loops"][0]["rss_bytes"]
        # The app leaks by design in every request of the round: its growth is not
        # what the attach left, so the run's own rate takes it out.
        leaked = run["verdict"]["bytes_per_iteration"] * len(client.samples) \
            if run["verdict"]["leak"] else 0.0
        before = _figures(client.between(t0, t1), t1 - t0)
        during = _figures(client.between(t1, t2), t2 - t1)
        after = _figures(client.between(t2, t3), t3 - t2)
        return {
            "stopped_ms": round(attach["stopped_seconds"] * 1000, 1),
            "held_ms": round(attach["held_seconds"] * 1000, 1),
            "attach_seconds": round(t2 - t1, 2),
            "verdict": run["verdict"]["summary"][:60],
            "before": before, "during": during, "after": after,
            "rss_before_mib": round(rss_before / 2**20, 2),
            "rss_tracing_mib": round(rss_tracing / 2**20, 2),
            "rss_after_mib": round(rss_after / 2**20, 2),
            "leaked_mib": round(leaked / 2**20, 2),
            "left_mib": round((rss_after - rss_before - leaked) / 2**20, 2),
            "left_tracing_mib": round((rss_after - rss_tracing - leaked) / 2**20, 2),
        }
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=30)


def main() -> None:
    rounds = [one_round() for _ in range(ROUNDS)]
    med = statistics.median
    print(f"leakscope attach on a gunicorn sync worker ({APP}), {UNITS} units, {ROUNDS} rounds "
          "(median of rounds; ratios to the phase before the attach)")
    print(f"  process stopped by the debugger: {med(r['stopped_ms'] for r in rounds):.1f} ms "
          f"(max {max(r['stopped_ms'] for r in rounds):.1f})")
    print(f"  one thread held for the start-up: {med(r['held_ms'] for r in rounds):.1f} ms "
          f"(max {max(r['held_ms'] for r in rounds):.1f})")
    print(f"  whole attach, units included: {med(r['attach_seconds'] for r in rounds):.1f} s")
    for phase in ("before", "during", "after"):
        median = med(r[phase]["median_ms"] for r in rounds)
        base = med(r["before"]["median_ms"] for r in rounds) or 1.0
        print(f"  {phase:6} median {median:6.2f} ms ({median / base:4.2f}x)  "
              f"p99 {med(r[phase]['p99_ms'] for r in rounds):7.2f} ms  "
              f"max {max(r[phase]['max_ms'] for r in rounds):7.1f} ms  "
              f"{med(r[phase]['req_per_s'] for r in rounds):7.1f} req/s")
    print(f"  worker RSS {med(r['rss_before_mib'] for r in rounds):.2f} MiB before, "
          f"{med(r['rss_tracing_mib'] for r in rounds):.2f} MiB when tracing started, "
          f"{med(r['rss_after_mib'] for r in rounds):.2f} MiB after "
          f"(the app's own leak meanwhile: {med(r['leaked_mib'] for r in rounds):.2f} MiB)")
    print(f"  left by the attach, the leak taken out: "
          f"{med(r['left_mib'] for r in rounds):+.2f} MiB against before, "
          f"{med(r['left_tracing_mib'] for r in rounds):+.2f} MiB against tracing start "
          f"(per round: {', '.join(format(r['left_mib'], '+.2f') for r in rounds)})")
    print(f"  verdict: {rounds[0]['verdict']}...")


if __name__ == "__main__":
    main()
