"""`leakscope attach` to a gunicorn sync worker started plainly: its requests are the units,
the leaking line and holder are named, and afterwards it serves on at the RSS it had."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.attach.conftest import need_ptrace
from tests.conftest import ROOT, load_json, run_cli
from tests.workers.conftest import free_port

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
MIB = 1024 * 1024
# What an attach may leave behind in the worker's RSS (see the test): against the
# RSS before the attach, and against the RSS just before tracemalloc started.
# Issue 16 asks for 1 MiB against the latter. Read with leakscope's start-up
# slack given back first (malloc_trim), the worker ends 0.56-0.70 MiB over it
# (eight runs, 2026-12-06, the app's leak taken out): tracing's own (pymalloc and
# glibc fragmentation, libpython pages touched); the day before, with an earlier
# install, 0.99-1.04 MiB (BENCHMARKS.md, Issue 16).
RSS_LEFT = 8 * MIB
TRACING_LEFT = 1 * MIB


def rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def get(port: int, user: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/orders?user={user}",
                                timeout=10) as response:
        return response.read()


@pytest.fixture
def gunicorn_worker(tmp_path):
    need_ptrace()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    master = subprocess.Popen(
        [str(GUNICORN), "--chdir", str(ROOT / "scenarios" / "workers"), "-w", "1", "-k", "sync",
         "-b", f"127.0.0.1:{port}", "--timeout", "120", "wsgi_leak:app"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            get(port, "warm")
            break
        except OSError:
            assert master.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    assert len(children) == 1
    yield port, int(children[0])
    master.send_signal(signal.SIGTERM)
    master.wait(timeout=30)


def test_gunicorn_worker_attached_and_left(gunicorn_worker, tmp_path):
    port, worker = gunicorn_worker
    for _ in range(200):  # its own warm-up: imports, first-request caches, the allocator
        get(port, "warm")
    before = rss(worker)
    stop = threading.Event()
    sent = [0]

    def drive() -> None:
        while not stop.is_set():
            get(port, f"u{sent[0]}")
            sent[0] += 1
            time.sleep(0.005)

    driver = threading.Thread(target=drive)
    driver.start()
    out = tmp_path / "run.json"
    try:
        proc = run_cli("attach", str(worker), "--units", "150",
                       "--json", str(out), cwd=tmp_path)
    finally:
        stop.set()
        driver.join()
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = load_json(out)
    assert run["unit"] == "request"
    assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable"
    assert run["holders"][0]["path"] == "wsgi_leak.REQUESTS_BY_USER"
    lines = [f"{Path(s['user_frame']['file']).name}:{s['user_frame']['line']}"
             for s in run["sites"] if s.get("user_frame")]
    assert "wsgi_leak.py:19" in lines[:3], lines  # the scenario's Expected line
    assert run["processes"][0]["process"]["role"] == "gunicorn worker"
    # Still serving, and back near its size: tracing's memory (tracemalloc's
    # tables, the walks, the unit records) is freed and trimmed, and the RSS falls
    # to within TRACING_LEFT of what it was just before tracemalloc started (the
    # run's rss_before_tracing_bytes, read with all of leakscope loaded). Against
    # the RSS before the attach, about 4.5 MiB stays on CPython 3.11: leakscope's
    # modules are dropped and collected, but the standard-library modules they
    # imported stay (tracemalloc, ctypes, dataclasses, sysconfig), and pymalloc
    # keeps the arenas their objects shared with the worker's (issue 16 asked for
    # 1 MiB against that figure: missed; BENCHMARKS.md).
    deadline = time.monotonic() + 30
    while len(os.listdir(f"/proc/{worker}/task")) > 1:  # leakscope's thread is leaving
        assert time.monotonic() < deadline, "leakscope's thread is still in the worker"
        time.sleep(0.05)
    for _ in range(50):
        assert get(port, "after").startswith(b"hello after")
    time.sleep(0.5)
    after = rss(worker)
    process = run["processes"][0]
    tracing_started = process["observations"]["rss_before_tracing_bytes"]
    assert process["loops"][0]["traced_bytes"] is None  # not yet traced
    assert before < tracing_started  # read in the worker, with leakscope loaded
    print(f"RSS before {before / MIB:.2f} MiB, when tracing started "
          f"{tracing_started / MIB:.2f} MiB, after {after / MIB:.2f} MiB, "
          f"{sent[0]} leaking requests at {run['verdict']['bytes_per_iteration']:.0f} B each")
    # The worker leaks by design, in every request the driver sent while leakscope was
    # attached (more of them when gdb's attach is slow on a loaded machine, and each
    # resize of the leaking dict is a step in RSS): that growth is the worker's, not
    # what leakscope left, so the run's own measured rate takes it out.
    leaked = run["verdict"]["bytes_per_iteration"] * sent[0]
    assert after - tracing_started - leaked < TRACING_LEFT, (tracing_started, after, leaked)
    assert after - before - leaked < RSS_LEFT, (before, after, leaked)
