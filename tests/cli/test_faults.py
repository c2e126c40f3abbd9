"""Faults around a trace, through the real CLI: nothing gathered is lost, nothing is
left behind, and nothing the worker does to leakscope's channel becomes a traceback.

Each case writes a small worker into ``tmp_path``. A worker that must be caught in a
given state writes a marker file and waits for the test's ``go`` file, so no test
depends on how fast the machine is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_json, run_cli

FAST = ["--warmup", "2", "--no-holders"]
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_WORKER = 3
EXIT_INTERRUPTED = 130
ENV = dict(os.environ, COLUMNS="120", NO_COLOR="1")


def write(root: Path, name: str, source: str) -> Path:
    path = root / name
    path.write_text(textwrap.dedent(source))
    return path


def one_error_line(proc: subprocess.CompletedProcess, code: int, worker_raised: bool = False
                   ) -> str:
    """The failure's shape: its exit code, one error line, last, and no traceback
    (but the worker's own, once, when it raised)."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("leakscope: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0], "the error line comes last"
    assert "Traceback" not in proc.stdout, proc.stdout
    assert proc.stderr.count("Traceback") == (1 if worker_raised else 0), proc.stderr
    assert "leakscope/" not in proc.stderr.replace(errors[0], ""), proc.stderr
    return errors[0]


def wait_for(path: Path, proc: subprocess.Popen, what: str, limit: float = 120) -> None:
    """Wait until the worker has written ``path`` (it then waits for the test)."""
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, f"leakscope ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never reached {what}"
        time.sleep(0.05)


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_what_we_started():
    """A failed assertion must not leave a leakscope (and its worker) running."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def start(tmp_path: Path, *args: str, wrapper: Path | None = None, **kwargs) -> subprocess.Popen:
    """leakscope in its own session, as a terminal's foreground job would be."""
    command = [str(wrapper)] if wrapper else ["-m", "leakscope"]
    env = dict(ENV, PYTHONPATH=str(ROOT)) if wrapper else ENV
    proc = subprocess.Popen(
        [sys.executable, *command, *args], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True, **kwargs,
    )
    STARTED.append(proc)
    return proc


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, stdout, stderr


def next_line(proc: subprocess.Popen, limit: float = 60) -> str:
    """The next line leakscope writes to stderr ('' if none comes within ``limit``),
    past the line at start-up that names the worker's Python."""
    import threading

    assert proc.stderr is not None
    got: list[str] = []

    def read() -> None:
        line = proc.stderr.readline()
        while line.startswith("leakscope: worker Python "):
            line = proc.stderr.readline()
        got.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(limit)
    return got[0] if got else ""


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return bool(re.search(r"^State:\s+[ZX]", status, re.M))


def wait_gone(pid: int, limit: float = 30) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


# ------------------------------------------------- 1. a worker that dies mid-run


DIES = """\
    import ctypes, os, signal
    KEPT = []
    n = 0

    def iteration():
        global n
        n += 1
        KEPT.append(bytearray(100))
        if n == 8:
            {action}
"""

DEATHS = {
    "segfault": ("ctypes.string_at(0)", "SIGSEGV"),
    "sigkill": ("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    "os-exit": ("os._exit(0)", "exited with code 0"),
    "memory-error": ("raise MemoryError", "MemoryError"),
}


@pytest.mark.parametrize("death", list(DEATHS))
def test_worker_death_keeps_what_was_gathered(death: str, tmp_path: Path) -> None:
    action, says = DEATHS[death]
    write(tmp_path, "dies.py", DIES.format(action=action))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "dies.py", "-n", "20", *FAST, "--json", str(out),
                   cwd=tmp_path, timeout=120)
    line = one_error_line(proc, EXIT_WORKER, worker_raised=death == "memory-error")
    assert says in line and "loop 7" in line, line
    assert f"run file: {out}" in proc.stdout, proc.stdout
    run = load_json(out)
    # Two warm-up loops and five measured ones reached leakscope before the death.
    assert [loop["index"] for loop in run["loops"]] == list(range(7))
    assert run["verdict"]["partial"] is True
    assert says in run["verdict"]["ended"], run["verdict"]
    assert run["verdict"]["summary"].startswith("Partial run"), run["verdict"]["summary"]
    assert "interrupted" not in run["observations"]
    # The verdict was shown before the error line.
    assert "Partial run" in proc.stdout or "partial" in proc.stdout.lower()


def test_hung_worker_keeps_what_was_gathered(tmp_path: Path) -> None:
    write(tmp_path, "hangs.py", DIES.format(action="import time; time.sleep(600)"))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "hangs.py", "-n", "20", *FAST, "--timeout", "2",
                   "--json", str(out), cwd=tmp_path, timeout=120)
    line = one_error_line(proc, EXIT_WORKER)
    assert "hung" in line, line
    run = load_json(out)
    assert len(run["loops"]) == 7
    assert run["verdict"]["partial"] is True and "hung" in run["verdict"]["ended"]


def test_check_of_a_dying_worker_saves_and_exits_3(tmp_path: Path) -> None:
    write(tmp_path, "dies.py", DIES.format(action="os._exit(0)"))
    out = tmp_path / "run.json"
    proc = run_cli("check", "dies.py", "--full", "-n", "20", *FAST, "--json", str(out),
                   cwd=tmp_path, timeout=120)
    line = one_error_line(proc, EXIT_WORKER)
    assert "exited with code 0" in line
    assert load_json(out)["verdict"]["partial"] is True


def test_fast_check_of_a_worker_dying_before_locating_keeps_the_counters_verdict(
    tmp_path: Path,
) -> None:
    """Fast mode's counters saw the growth; the worker died before the loops that
    locate it. The verdict is the counters', not "too few loops"."""
    write(tmp_path, "dies.py", DIES.format(action="os._exit(0)").replace("n == 8", "n == 30"))
    out = tmp_path / "run.json"
    proc = run_cli("check", "dies.py", "-n", "40", *FAST, "--json", str(out), cwd=tmp_path)
    one_error_line(proc, EXIT_WORKER)
    verdict = load_json(out)["verdict"]
    assert verdict["partial"] is True and verdict["leak"] is True, verdict
    assert "from the counters" in verdict["summary"], verdict["summary"]


# ------------------------------- 2. Ctrl-C once every loop is gathered


SLOW_TEARDOWN = """\
    import os, time
    KEPT = []

    def iteration():
        KEPT.append(bytearray(100))

    def teardown():
        open("finishing", "w").close()
        while not os.path.exists("go"):
            time.sleep(0.02)
"""


def test_ctrl_c_while_the_child_finishes_keeps_the_whole_run(tmp_path: Path) -> None:
    """Every loop has reached leakscope; Ctrl-C while the traced process finishes
    (its final collection, holder walk, teardown) cuts nothing: the verdict is the
    full run's, printed, then saved."""
    write(tmp_path, "w.py", SLOW_TEARDOWN)
    out = tmp_path / "run.json"
    proc = start(tmp_path, "trace", "w.py", "-n", "12", *FAST, "--json", str(out))
    wait_for(tmp_path / "finishing", proc, "the teardown")
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)  # the signal is delivered; the worker then finishes at once
    (tmp_path / "go").touch()
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert "every loop was gathered" in stderr, stderr
    run = load_json(out)
    assert len([loop for loop in run["loops"] if not loop["warmup"]]) == 12
    assert run["verdict"]["partial"] is False
    assert run["verdict"]["leak"] is True
    assert "LEAK" in stdout


SLOW_ANALYSIS = """\
    import os, sys, time
    import leakscope.analysis as analysis

    real = analysis.analyse

    def slow(run):
        open("analysing", "w").close()
        while not os.path.exists("go"):
            time.sleep(0.02)
        return real(run)

    analysis.analyse = slow
    from leakscope.cli import main

    main(sys.argv[1:])
"""


def _in_slow_analysis(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A leaking trace whose analysis waits for the test: Ctrl-C lands in leakscope's own work."""
    write(tmp_path, "w.py", "KEPT = []\n\ndef iteration():\n    KEPT.append(bytearray(100))\n")
    wrapper = write(tmp_path, "slow_cli.py", SLOW_ANALYSIS)
    out = tmp_path / "run.json"
    proc = start(tmp_path, "trace", "w.py", "-n", "12", *FAST, "--json", str(out),
                 wrapper=wrapper)
    wait_for(tmp_path / "analysing", proc, "the analysis")
    return proc, out


def test_ctrl_c_during_the_analysis_prints_and_saves(tmp_path: Path) -> None:
    """The first Ctrl-C in leakscope's own analysis does not abandon the run."""
    proc, out = _in_slow_analysis(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    (tmp_path / "go").touch()
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert "every loop was gathered" in stderr and "Ctrl-C again" in stderr, stderr
    assert "LEAK" in stdout, stdout
    run = load_json(out)
    assert run["verdict"]["leak"] is True and run["verdict"]["partial"] is False


def test_second_ctrl_c_during_the_analysis_abandons_and_says_so(tmp_path: Path) -> None:
    proc, out = _in_slow_analysis(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    first = next_line(proc)
    assert "Ctrl-C again" in first, first
    os.killpg(proc.pid, signal.SIGINT)
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("leakscope:")]
    assert len(lines) == 1 and "abandoned" in lines[0], stderr
    assert not out.exists()


SLOW_SAVE = """\
    import os, sys, time
    import leakscope.model.runfile as runfile

    real = runfile.save

    def slow(run, path):
        open("saving", "w").close()
        while not os.path.exists("go"):
            time.sleep(0.02)
        return real(run, path)

    runfile.save = slow
    from leakscope.cli import main

    main(sys.argv[1:])
"""


def test_ctrl_c_during_the_save_finishes_the_save(tmp_path: Path) -> None:
    """A Ctrl-C while the run file is written: the verdict was printed, the file lands
    whole, and the exit code says the run was interrupted."""
    write(tmp_path, "w.py", "KEPT = []\n\ndef iteration():\n    KEPT.append(bytearray(100))\n")
    wrapper = write(tmp_path, "slow_cli.py", SLOW_SAVE)
    out = tmp_path / "run.json"
    proc = start(tmp_path, "trace", "w.py", "-n", "12", *FAST, "--json", str(out),
                 wrapper=wrapper)
    wait_for(tmp_path / "saving", proc, "the save")
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    (tmp_path / "go").touch()
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr, stderr
    assert stdout.index("LEAK") < stdout.index(f"run file: {out}"), stdout
    run = load_json(out)
    assert run["verdict"]["leak"] is True and run["verdict"]["partial"] is False


# --------------------------------- 3. a saved run is judged by its verdict


def test_check_of_a_saved_interrupted_leak_is_judged_by_its_verdict(tmp_path: Path) -> None:
    write(tmp_path, "w.py", DIES.format(action="os.kill(os.getpid(), signal.SIGINT)")
          .replace("n == 8", "n == 14"))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "w.py", "-n", "40", *FAST, "--json", str(out), cwd=tmp_path)
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    saved = load_json(out)
    assert saved["verdict"]["partial"] is True and saved["verdict"]["leak"] is True, saved
    check = run_cli("check", str(out), cwd=tmp_path)
    assert check.returncode == EXIT_LEAK, (check.stdout, check.stderr)
    assert "LEAK" in check.stdout and "partial" in check.stdout
    assert "interrupted" not in check.stderr


# ------------------------------------------------- 4. the save fails at the end


def test_failed_save_still_shows_the_verdict(tmp_path: Path) -> None:
    """A disk that fills during the run (RLIMIT_FSIZE stands in for it): the
    verdict is shown first, then the one line about the save."""
    import resource

    write(tmp_path, "w.py", "KEPT = []\n\ndef iteration():\n    KEPT.append(bytearray(100))\n")
    out = tmp_path / "run.json"

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    proc = subprocess.run(
        [sys.executable, "-m", "leakscope", "trace", "w.py", "-n", "12", *FAST,
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=120,
        preexec_fn=small_files,
    )
    line = one_error_line(proc, EXIT_USAGE)
    assert "cannot write run file" in line, line
    assert "LEAK" in proc.stdout, proc.stdout
    assert not out.exists()
    assert not list(tmp_path.glob(".run.json.*")), "no half-written file is left"


def test_dying_worker_and_failed_save_make_one_error_line(tmp_path: Path) -> None:
    """Both failures are told, in one line; the exit code is the worker's."""
    import resource

    write(tmp_path, "dies.py", DIES.format(action="os._exit(0)"))
    out = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, "-m", "leakscope", "trace", "dies.py", "-n", "20", *FAST,
         "--json", str(out)],
        cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048)),
    )
    line = one_error_line(proc, EXIT_WORKER)
    assert "exited with code 0" in line and "cannot write run file" in line, line
    assert "Partial run" in proc.stdout


# ------------------------------------------ 5. nothing outlives leakscope


HANGS_IN_LOOP = """\
    import os, time

    def iteration():
        with open("child.pid.tmp", "w") as out:
            out.write(str(os.getpid()))
        os.replace("child.pid.tmp", "child.pid")  # never seen half-written
        time.sleep(600)
"""


def test_sigkill_of_leakscope_takes_the_traced_child_with_it(tmp_path: Path) -> None:
    write(tmp_path, "w.py", HANGS_IN_LOOP)
    proc = start(tmp_path, "trace", "w.py", "-n", "3", "--warmup", "0", "--no-holders",
                 "--timeout", "900", "--json", str(tmp_path / "run.json"))
    try:
        wait_for(tmp_path / "child.pid", proc, "the first loop")
        child = int((tmp_path / "child.pid").read_text())
        proc.kill()
        proc.wait()
        assert wait_gone(child), "the traced child outlived leakscope"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()


WATCHED_CHILD = """\
    import os, sys, time
    from leakscope.measure import harness

    harness._set_pdeathsig = lambda signum: False  # as where prctl is missing
    harness.tie_to_parent(os.getppid())
    with open(sys.argv[1] + ".tmp", "w") as out:
        out.write(str(os.getpid()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(600)
"""


def test_without_prctl_the_child_still_notices_its_parent_gone(tmp_path: Path) -> None:
    """The fallback: a watcher thread sees getppid() change and ends the child."""
    child = write(tmp_path, "child.py", WATCHED_CHILD)
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         f"subprocess.Popen([sys.executable, {str(child)!r}, {str(pid_file)!r}])\n"
         "time.sleep(600)\n"],
        env=dict(ENV, PYTHONPATH=str(ROOT)), start_new_session=True,
    )
    STARTED.append(parent)
    wait_for(pid_file, parent, "the child's start")
    pid = int(pid_file.read_text())
    try:
        parent.kill()
        parent.wait()
        assert wait_gone(pid), "the child outlived its parent"
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGKILL)


# ------------------------------------------------- 6. a worker that forks


FORKS = """\
    import os, sys, time
    KEPT = []
    n = 0

    def iteration():
        global n
        n += 1
        KEPT.append(bytearray(100))
        if n == 6:
            pid = os.fork()
            if pid == 0:
                {child}
"""


def test_forked_child_that_keeps_looping_does_not_corrupt_the_trace(tmp_path: Path) -> None:
    write(tmp_path, "w.py", FORKS.format(child="pass  # and loops on with the parent"))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "w.py", "-n", "20", *FAST, "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    run = load_json(out)
    assert [loop["index"] for loop in run["loops"]] == list(range(22))
    assert run["verdict"]["leak"] is True, run["verdict"]


def test_forked_child_that_sleeps_does_not_hang_the_trace(tmp_path: Path) -> None:
    child = ("devnull = os.open(os.devnull, os.O_WRONLY)\n"
             "                os.dup2(devnull, 1); os.dup2(devnull, 2)\n"
             "                open('forked.pid', 'w').write(str(os.getpid()))\n"
             "                time.sleep(120)\n"
             "                os._exit(0)")
    write(tmp_path, "w.py", FORKS.format(child=child))
    out = tmp_path / "run.json"
    try:
        proc = run_cli("trace", "w.py", "-n", "20", *FAST, "--timeout", "5",
                       "--json", str(out), cwd=tmp_path)
    finally:
        pid_file = tmp_path / "forked.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    assert len(run["loops"]) == 22 and run["verdict"]["leak"] is True


# ------------------------------------------------ 7. SIGINT in every form


SLOW = """\
    import os, signal, time
    KEPT = []

    def setup():
        {setup}

    def iteration():
        KEPT.append(bytearray(100))
        time.sleep(0.05)
        if len(KEPT) == 8:
            open("running", "w").close()
"""


def test_trace_in_the_background_stops_on_sigint(tmp_path: Path) -> None:
    """Started by a shell script with `&`, SIGINT is inherited ignored: `kill -INT`
    must still stop the run and keep what was gathered."""
    write(tmp_path, "w.py", SLOW.format(setup="pass"))
    out = tmp_path / "run.json"
    proc = start(tmp_path, "trace", "w.py", "-n", "2000", *FAST, "--json", str(out),
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    wait_for(tmp_path / "running", proc, "the eighth loop")
    os.kill(proc.pid, signal.SIGINT)  # leakscope alone, as `kill -INT %1` does
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr
    run = load_json(out)
    assert run["verdict"]["partial"] is True
    assert 7 <= len(run["loops"]) < 2000  # the eighth may be cut by the SIGINT


def test_worker_that_ignores_sigint_is_told_on_the_first_ctrl_c(tmp_path: Path) -> None:
    write(tmp_path, "w.py", SLOW.format(setup="signal.signal(signal.SIGINT, signal.SIG_IGN)"))
    out = tmp_path / "run.json"
    proc = start(tmp_path, "trace", "w.py", "-n", "2000", *FAST, "--json", str(out))
    wait_for(tmp_path / "running", proc, "the eighth loop")
    os.killpg(proc.pid, signal.SIGINT)
    first = next_line(proc)
    assert "Ctrl-C again" in first, first
    os.killpg(proc.pid, signal.SIGINT)
    code, stdout, stderr = finish(proc)
    assert code == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stdout + stderr
    assert out.exists(), first + stderr
    run = load_json(out)
    assert run["verdict"]["partial"] is True and len(run["loops"]) < 2000


# ------------------------------------- 8. a worker that meddles with our fds


MEDDLES = DIES  # the same worker: it meddles instead of dying in loop 8


@pytest.mark.parametrize("garbage", [b"garbage", b"garbage\n", b'{"t":"final","outcome":5}\n',
                                     b'{"t":"error"}\n', b"[1]\n"])
def test_garbage_on_the_channel_is_one_error_line(garbage: bytes, tmp_path: Path) -> None:
    action = ("for fd in range(3, 256):\n"
              "                try:\n"
              f"                    os.write(fd, {garbage!r})\n"
              "                except OSError:\n"
              "                    pass")
    write(tmp_path, "w.py", MEDDLES.format(action=action))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "w.py", "-n", "20", *FAST, "--json", str(out), cwd=tmp_path)
    line = one_error_line(proc, EXIT_WORKER)
    assert "wrote to leakscope's channel" in line, line
    run = load_json(out)
    assert len(run["loops"]) == 7 and run["verdict"]["partial"] is True


def test_closed_channel_is_one_error_line(tmp_path: Path) -> None:
    write(tmp_path, "w.py", MEDDLES.format(action="os.closerange(3, 1024)"))
    out = tmp_path / "run.json"
    proc = run_cli("trace", "w.py", "-n", "20", *FAST, "--json", str(out), cwd=tmp_path)
    line = one_error_line(proc, EXIT_WORKER)
    assert "closed leakscope's channel" in line and "loop 7" in line, line
    run = load_json(out)
    assert len(run["loops"]) == 7 and run["verdict"]["partial"] is True
    assert json.dumps(run)  # a whole, readable run file
