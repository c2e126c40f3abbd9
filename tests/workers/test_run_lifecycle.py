"""`leakscope run` as a command-line tool: the worker's own output, peak and end.

The command's output passes through, its peak is its own, and nothing of
leakscope's (processes, armed interpreters, the run directory) outlives the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import ROOT, load_json, run_cli

CLEAN_TICKS = textwrap.dedent(
    """
    import sys
    import leakscope

    for i in range(int(sys.argv[1])):
        data = [str(n) for n in range(50)]
        leakscope.tick()
    """
)


def _script(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_summary_counts_processes_as_the_table_does(tmp_path):
    """--sample auto watches a clean process with its counters and never traces it:
    the verdict must not say "1 processes traced" over a table that shows none."""
    script = _script(tmp_path, "clean.py", CLEAN_TICKS)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script), "150")
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    (process,) = run["processes"]
    assert process["process"]["traced_units"] == 0
    summary = run["verdict"]["summary"]
    assert "1 process watched, none traced" in summary, summary
    assert "processes traced" not in proc.stdout


PEAK_REPORTER = textwrap.dedent(
    """
    import sys
    import leakscope

    def own_peak():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    KEPT = []
    for i in range(int(sys.argv[2])):
        KEPT.append([str(n) for n in range(20)])
        if i == int(sys.argv[3]):
            spike = b"x" * (96 << 20)   # one unit that spikes, then frees it
            del spike
        leakscope.tick()
    with open(sys.argv[1], "w") as out:
        out.write(str(own_peak()))
    """
)


def test_the_peak_is_the_workers_own_not_leakscopes(tmp_path):
    """The worker's peak, not that of the leakscope process it was started from:
    ru_maxrss keeps the pre-exec image's high-water mark across exec, so a
    steady worker seemed to have "spiked" to leakscope's own size."""
    script = _script(tmp_path, "steady.py", PEAK_REPORTER)
    out, peak_file = tmp_path / "run.json", tmp_path / "peak.txt"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script),
                   str(peak_file), "300", "-1")
    assert proc.returncode == 0, proc.stderr
    own = int(peak_file.read_text())
    (process,) = load_json(out)["processes"]
    reported = process["process"]["peak_rss_bytes"]
    # What the worker itself reads, give or take the final save (after the
    # agent's reading) and the worker's own last lines (after its last unit).
    assert own - (1 << 20) <= reported <= own + (2 << 20), (own, reported)
    assert "spiked" not in proc.stdout, proc.stdout


def test_a_real_spike_is_still_reported(tmp_path):
    script = _script(tmp_path, "spiky.py", PEAK_REPORTER)
    out, peak_file = tmp_path / "run.json", tmp_path / "peak.txt"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script),
                   str(peak_file), "300", "40")
    assert proc.returncode == 0, proc.stderr
    (process,) = load_json(out)["processes"]
    assert process["process"]["peak_rss_bytes"] >= 96 << 20
    assert "one unit spiked and was freed" in proc.stdout, proc.stdout


TALKER = textwrap.dedent(
    """
    import sys
    import leakscope

    line = sys.stdin.readline().strip()
    print(f"got: {line}", flush=True)
    print("worker warning: on stderr", file=sys.stderr, flush=True)
    for i in range(40):
        leakscope.tick()
    """
)


def _leakscope(*args: str, tmp: object, **kwargs) -> subprocess.CompletedProcess:
    """The real CLI with its temporary folder in ``tmp``, so what it leaves there is seen."""
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-m", "leakscope", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_the_commands_output_and_stdin_pass_through_and_nothing_is_left(tmp_path):
    script = _script(tmp_path, "talker.py", TALKER)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _leakscope("run", "--quiet", "--json", str(tmp_path / "run.json"), "--",
                      sys.executable, str(script), tmp=tmp, input="hello\n")
    assert proc.returncode == 0, proc.stderr
    assert "got: hello" in proc.stdout
    assert "worker warning: on stderr" in proc.stderr
    assert "worker warning" not in proc.stdout and "got: hello" not in proc.stderr
    assert list(tmp.iterdir()) == []


def test_keep_run_dir_keeps_it_and_says_where(tmp_path):
    script = _script(tmp_path, "talker.py", TALKER)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _leakscope("run", "--quiet", "--keep-run-dir", "--json", str(tmp_path / "run.json"),
                      "--", sys.executable, str(script), tmp=tmp, input="x\n")
    assert proc.returncode == 0, proc.stderr
    (kept,) = tmp.iterdir()
    assert f"run directory kept: {kept}" in proc.stdout + proc.stderr
    assert list(kept.glob("*.jsonl"))


FOREVER = textwrap.dedent(
    """
    import os
    import sys
    import time
    import leakscope

    with open(sys.argv[1], "w") as out:
        out.write(str(os.getpid()))
    KEPT = []
    while True:
        KEPT.append("x" * 100)
        print("unit done " + "." * 200, flush=True)   # chatty, as a real worker is
        time.sleep(0.001)
        leakscope.tick()
    """
)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line for line in status)
    except OSError:
        return False


def _sizes(tmp) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in tmp.rglob("*") if p.is_file()}


def test_sigkill_of_leakscope_takes_the_worker_with_it(tmp_path):
    script = _script(tmp_path, "forever.py", FOREVER)
    pid_file = tmp_path / "pid"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "leakscope", "run", "--quiet", "--", sys.executable, str(script),
         str(pid_file)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not list(tmp.rglob("*.jsonl")) or not pid_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(1)
        worker = int(pid_file.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived leakscope"
        before = _sizes(tmp)
        time.sleep(1.5)
        assert _sizes(tmp) == before, "something still writes into the run directory"
        # The killed run could not remove its directory: the next run does.
        talker = _script(tmp_path, "talker.py", TALKER)
        again = _leakscope("run", "--quiet", "--json", str(tmp_path / "run.json"), "--",
                           sys.executable, str(talker), tmp=tmp, input="x\n")
        assert again.returncode == 0, again.stderr
        assert list(tmp.iterdir()) == []
    finally:
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)


DAEMON = textwrap.dedent(
    """
    import json
    import os
    import subprocess
    import sys
    import time
    import tracemalloc
    import leakscope

    report, go = sys.argv[1], sys.argv[2]
    for i in range(30):
        leakscope.tick()
    if os.fork() == 0:              # the classic double fork: out of the group kill
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            give_up = time.monotonic() + 60
            while not os.path.exists(go):     # the run is over when the test says go
                if time.monotonic() > give_up:
                    os._exit(1)
                time.sleep(0.05)
            end = time.monotonic() + 2.5
            while time.monotonic() < end:     # units after the run: nothing may be written
                leakscope.tick()
                time.sleep(0.01)
            child = subprocess.run(
                [sys.executable, "-c", "import json, os, sys; from leakscope.drive import agent; "
                 "print(json.dumps({'armed': agent.current() is not None, "
                 "'env': {k: os.environ.get(k) for k in "
                 "('LEAKSCOPE_AGENT', 'PYTHONPATH', 'GLIBC_TUNABLES')}}))"],
                capture_output=True, text=True)
            from leakscope.drive import agent
            with open(report, "w") as out:
                json.dump({"tracing": tracemalloc.is_tracing(),
                           "disarmed": agent.current().disarmed,
                           "env": {k: os.environ.get(k) for k in
                                   ("LEAKSCOPE_AGENT", "PYTHONPATH", "GLIBC_TUNABLES")},
                           "child": child.stdout}, out)
        os._exit(0)
    """
)


@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_a_daemon_that_escaped_the_run_is_disarmed_and_arms_nothing(tmp_path, keep):
    """A double-forked daemon leaves the group leakscope kills; once the run is over
    (its directory removed, or kept with leakscope gone) it writes nothing, traces
    nothing, and neither its environment nor a Python it starts is armed."""
    script = _script(tmp_path, "daemon.py", DAEMON)
    report, go = tmp_path / "report.json", tmp_path / "go"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", "TMPDIR": str(tmp)}
    env.pop("GLIBC_TUNABLES", None)
    env["PYTHONPATH"] = str(ROOT)  # leakscope importable in the daemon, as from its venv
    proc = subprocess.run(
        [sys.executable, "-m", "leakscope", "run", "--quiet", "--json",
         str(tmp_path / "run.json"), *(["--keep-run-dir"] if keep else []), "--",
         sys.executable, str(script), str(report), str(go)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before = _sizes(tmp)
    go.touch()
    deadline = time.monotonic() + 30
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)
    seen = json.loads(report.read_text())
    assert seen["disarmed"] is True and seen["tracing"] is False, seen
    assert seen["env"] == {"LEAKSCOPE_AGENT": None, "PYTHONPATH": str(ROOT),
                           "GLIBC_TUNABLES": None}, seen
    child = json.loads(seen["child"])
    assert child == {"armed": False, "env": seen["env"]}, child
    # The units after the run wrote nothing: not even a file for the daemon's child.
    assert _sizes(tmp) == before
    assert keep or list(tmp.iterdir()) == []
