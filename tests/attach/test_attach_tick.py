"""`leakscope attach` on a plain loop worker: time slices as units, then it leaves it clean."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT, load_json, run_cli

CLEAN_STATE = {"leakscope": [], "tracing": False, "private_path": [], "threads": ["MainThread"],
               "main_keys": ["KEPT", "json", "main", "os", "status", "sys", "threading", "time",
                             "tracemalloc", "work"]}


def left_clean(worker) -> dict:
    """The worker's next status after the attach: nothing of leakscope's is left in it."""
    seen = len(worker.statuses())
    state = worker.wait_status(seen + 2)
    assert {key: state[key] for key in CLEAN_STATE} == CLEAN_STATE
    assert worker.proc.poll() is None
    return state


def test_leaking_loop_found_and_left(tick_worker, tmp_path):
    worker = tick_worker("leak")
    before = worker.wait_status(2)
    assert {key: before[key] for key in CLEAN_STATE} == CLEAN_STATE
    out = tmp_path / "run.json"
    proc = run_cli("attach", str(worker.pid), "--duration", "6", "--sample", "1",
                   "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = load_json(out)
    assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable"
    assert run["unit"] == "time slice"
    assert "time slice" in run["observations"]["attach"]["unit_note"]
    assert run["holders"][0]["path"] == "tick_worker.KEPT"
    user = run["sites"][0]["user_frame"]
    assert user["file"].endswith("tick_worker.py") and user["line"] == 28
    attach_info = run["observations"]["attach"]
    assert attach_info["route"] == "gdb" and attach_info["stopped_because"] == "duration"
    assert attach_info["stopped_seconds"] > 0 and attach_info["held_seconds"] > 0
    assert "process stopped" in proc.stdout
    state = left_clean(worker)
    assert state["kept"] > before["kept"]  # it went on working


def test_clean_loop_no_leak(tick_worker, tmp_path):
    worker = tick_worker("clean")
    out = tmp_path / "run.json"
    proc = run_cli("attach", str(worker.pid), "--units", "60", "--sample", "1",
                   "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    run = load_json(out)
    assert run["verdict"]["leak"] is False, run["verdict"]
    assert run["observations"]["attach"]["stopped_because"] == "units"
    left_clean(worker)


def test_process_that_exits_during_the_span(tick_worker, tmp_path):
    """What it gathered is saved and marked partial; exit 3, one line."""
    worker = tick_worker("leak", seconds=6)
    out = tmp_path / "run.json"
    proc = run_cli("attach", str(worker.pid), "--duration", "60", "--sample", "1",
                   "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert f"pid {worker.pid} ended during the span" in proc.stderr.strip().splitlines()[-1]
    run = load_json(out)
    assert run["verdict"]["partial"] is True
    assert run["observations"]["attach"]["stopped_because"] == "exited"
    assert len(run["loops"]) > 5


def test_ctrl_c_detaches_cleanly(tick_worker, tmp_path):
    worker = tick_worker("leak")
    out = tmp_path / "run.json"
    tool = subprocess.Popen(
        [sys.executable, "-m", "leakscope", "attach", str(worker.pid), "--duration", "120",
         "--sample", "1", "--json", str(out)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    # Wait for units to be counted (the worker's run dir has its events file).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            "leakscope" in " ".join(s["leakscope"]) for s in worker.statuses()[-1:]):
        time.sleep(0.1)
    time.sleep(3)
    tool.send_signal(signal.SIGINT)
    stdout, stderr = tool.communicate(timeout=90)
    assert tool.returncode == 130, stderr + stdout
    assert "Traceback" not in stderr
    run = load_json(out)
    assert run["verdict"]["partial"] is True
    assert run["observations"]["attach"]["stopped_because"] == "interrupted"
    left_clean(worker)


def test_no_safe_point_detaches_and_leaves_it_running(tmp_path):
    """A pure-Python busy loop never blocks: gdb gives up after --wait and detaches;
    the process is never left stopped, nor with a breakpoint in it."""
    from tests.attach.conftest import need_ptrace

    need_ptrace()
    busy = subprocess.Popen([sys.executable, "-c",
                             "import time\nend = time.monotonic() + 6\n"
                             "while time.monotonic() < end: pass\n"
                             "while True: time.sleep(0.01)\n"])
    try:
        time.sleep(0.3)
        proc = run_cli("attach", str(busy.pid), "--wait", "1", "--json",
                       str(tmp_path / "run.json"), cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr + proc.stdout
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith("leakscope: error: ") and "safe point" in line, proc.stderr
        assert "Traceback" not in proc.stderr
        state = open(f"/proc/{busy.pid}/stat").read().rsplit(")", 1)[1].split()[0]
        assert state in ("R", "S"), state  # running, not stopped ("t") by a tracer
        # Past its busy loop it blocks in time.sleep(), the safe point gdb waited for:
        # a breakpoint left there would kill it with SIGTRAP.
        time.sleep(7)
        assert busy.poll() is None
        assert "TracerPid:\t0" in open(f"/proc/{busy.pid}/status").read()
    finally:
        busy.kill()
        busy.wait()


def test_a_loop_that_calls_tick_counts_its_loops(tmp_path):
    """A worker that keeps ``leakscope.tick()`` in production code (its own leakscope
    installed): each tick is a unit, not a time slice, and its copy is left in place."""
    from tests.attach.conftest import need_ptrace

    need_ptrace()
    script = tmp_path / "ticking.py"
    status = tmp_path / "ticking.status"
    script.write_text(
        "import os, sys, time\n"
        "from leakscope import tick\n"
        "import leakscope.measure.hook as own_hook\n"
        "KEPT = []\n"
        "while True:\n"
        "    KEPT.append(bytearray(2000))\n"
        "    time.sleep(0.01)\n"
        "    tick()\n"
        # Written whole and renamed: a read between open('w') and write() saw ''.
        f"    open({str(status) + '.tmp'!r}, 'w')"
        ".write(repr((sys.modules['leakscope.measure.hook'] is own_hook,"
        " own_hook.installed() is None)))\n"
        f"    os.replace({str(status) + '.tmp'!r}, {str(status)!r})\n"
    )
    worker = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not status.exists():
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.05)
        out = tmp_path / "run.json"
        proc = run_cli("attach", str(worker.pid), "--units", "60", "--json", str(out),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        run = load_json(out)
        assert run["unit"] == "loop"
        assert "unit_note" not in run["observations"]["attach"]
        assert run["verdict"]["leak"] is True
        assert run["holders"][0]["path"] == "ticking.KEPT"
        time.sleep(1)
        assert status.read_text() == "(True, True)"  # its own leakscope back, unhooked
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
