"""Where runs are written, under contention and on a read-only file system.

Two traces at once in one directory must each save a whole run of their own;
an output that cannot be written is one error line with exit 2 (README: "2 ...
an output that cannot be written"), never a traceback, and once a run has been
made its verdict is shown before that line.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

FAST = ["--warmup", "2", "--no-holders"]
EXIT_USAGE = 2
ENV = dict(os.environ, COLUMNS="120", NO_COLOR="1")

# Each worker waits in its teardown until the other has reached its own: the two
# leakscopes then analyse and save at the same moment.
TOGETHER = textwrap.dedent(
    """
    import os
    import time

    KEPT = []

    def iteration():
        data = bytearray(100)
        if {leaks}:
            KEPT.append(data)

    def teardown():
        open("done-{name}", "w").close()
        give_up = time.monotonic() + 60
        while not (os.path.exists("done-a") and os.path.exists("done-b")):
            if time.monotonic() > give_up:
                raise SystemExit("the other trace never came")
            time.sleep(0.005)
    """
)


def _two_workers(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(TOGETHER.format(name="a", leaks=True))
    (tmp_path / "b.py").write_text(TOGETHER.format(name="b", leaks=False))


def _both_at_once(tmp_path: Path, extra: dict[str, list[str]]) -> dict[str, tuple[int, str, str]]:
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "leakscope", "trace", f"{name}.py", "-n", "20", *FAST,
             *extra[name]],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        for name in ("a", "b")
    }
    results = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=180)
            results[name] = (proc.returncode, stdout, stderr)
        # Both teardowns were reached: the two runs overlapped to their saves.
        assert (tmp_path / "done-a").exists() and (tmp_path / "done-b").exists()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _no_temporary_files(directory: Path) -> None:
    left = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert left == [], f"half-written files left: {left}"


def test_two_traces_at_once_write_their_own_whole_run_files(tmp_path: Path) -> None:
    _two_workers(tmp_path)
    results = _both_at_once(tmp_path, {"a": ["--json", "a.json"], "b": ["--json", "b.json"]})
    for name, (code, stdout, stderr) in results.items():
        assert code == 0, (name, stdout, stderr)
        assert "Traceback" not in stdout + stderr, stderr
        assert f"run file: {name}.json" in stdout, stdout
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["target"].endswith("a.py") and b["target"].endswith("b.py"), (a["target"],
                                                                           b["target"])
    assert a["verdict"]["leak"] is True, a["verdict"]
    assert b["verdict"]["leak"] is False, b["verdict"]
    _no_temporary_files(tmp_path)
    assert not (tmp_path / ".leakscope").exists()


def test_two_traces_at_once_into_the_default_run_file(tmp_path: Path) -> None:
    """Both make ``.leakscope/`` (it does not exist yet) and replace last-run.json at
    the same moment: both succeed, and what is left is one whole run, one of theirs."""
    _two_workers(tmp_path)
    results = _both_at_once(tmp_path, {"a": [], "b": []})
    for name, (code, stdout, stderr) in results.items():
        assert code == 0, (name, stdout, stderr)
        assert "Traceback" not in stdout + stderr, stderr
        assert "run file: .leakscope/last-run.json" in stdout, stdout
    runs = tmp_path / ".leakscope"
    assert sorted(p.name for p in runs.iterdir()) == ["last-run.json"]
    last = json.loads((runs / "last-run.json").read_text())
    target = Path(last["target"]).name
    assert target in ("a.py", "b.py"), last["target"]
    assert last["verdict"]["leak"] is (target == "a.py"), last["verdict"]
    assert not runs.stat().st_mode & 0o002


# ------------------------------------------------------------- read-only outputs


def _files_obey_their_modes() -> None:
    """In the child before exec: root loses the capabilities that ignore file modes
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a 0555 directory is read-only to it
    as to any user. Other users need nothing."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            os._exit(99)


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


@pytest.fixture
def read_only(tmp_path: Path):
    """Make a directory read-only to the leakscope the test starts; skip where that
    cannot be arranged (root without CAP_SETPCAP, say)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    tried = subprocess.run(
        [sys.executable, "-c", f"open({str(probe / 'x')!r}, 'w')"],
        capture_output=True, text=True, preexec_fn=_files_obey_their_modes,
    )
    probe.chmod(0o755)
    if tried.returncode == 0 or "PermissionError" not in tried.stderr:
        pytest.skip("cannot make a directory read-only for this user")
    made: list[Path] = []

    def make(directory: Path) -> None:
        directory.chmod(0o555)
        made.append(directory)

    yield make
    for directory in made:  # so that pytest can remove tmp_path
        directory.chmod(0o755)


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "leakscope", *args], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=ENV, preexec_fn=_files_obey_their_modes,
    )
    STARTED.append(proc)
    return proc


STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _stop_what_we_started():
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _refused_up_front(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Refused before anything ran: exit 2, one line on stderr, nothing else, no traceback."""
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("leakscope: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    return lines[0]


def _failed_save(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """A run that was made and could not be saved: the verdict is shown, then one
    error line, last; exit 2; no traceback."""
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("leakscope: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0], "the error line comes last"
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert "LEAK" in proc.stdout, f"the verdict was not shown: {proc.stdout!r}"
    return errors[0]


LEAKS = "KEPT = []\n\ndef iteration():\n    KEPT.append(bytearray(100))\n"


@pytest.mark.parametrize(("command", "where"), [
    ("trace", "--json"), ("trace", "default"), ("trace", "--html"),
    ("check", "--json"), ("check", "default"),   # check has no --html
])
def test_a_read_only_output_is_refused_before_the_run(tmp_path: Path, read_only, command: str,
                                                      where: str) -> None:
    (tmp_path / "w.py").write_text(LEAKS.replace("def iteration", "open('ran', 'w').close()"
                                                 "\n\ndef iteration"))
    if where == "default":
        (tmp_path / ".leakscope").mkdir()
        read_only(tmp_path / ".leakscope")
        args, option, path = [], "--json", ".leakscope/last-run.json"
    else:
        (tmp_path / "out").mkdir()
        read_only(tmp_path / "out")
        path = "out/run.html" if where == "--html" else "out/run.json"
        args, option = [where, path], where
        if where == "--html":
            args += ["--json", "run.json"]
    proc = _finish(_start(tmp_path, command, "w.py", "-n", "10", *FAST, *args))
    _refused_up_front(proc, f"{option} {path}", "cannot write there")
    assert not (tmp_path / "ran").exists(), "the worker was run all the same"


@pytest.mark.parametrize("where", ["--json", "default"])
def test_run_refuses_a_read_only_output_before_starting_the_command(
    tmp_path: Path, read_only, where: str
) -> None:
    if where == "default":
        (tmp_path / ".leakscope").mkdir()
        read_only(tmp_path / ".leakscope")
        args, path = [], ".leakscope/last-run.json"
    else:
        (tmp_path / "out").mkdir()
        read_only(tmp_path / "out")
        args, path = ["--json", "out/run.json"], "out/run.json"
    proc = _finish(_start(tmp_path, "run", *args, "--", sys.executable, "-c",
                          "open('ran', 'w').close()"))
    _refused_up_front(proc, f"--json {path}", "cannot write there")
    assert not (tmp_path / "ran").exists(), "the command was started all the same"


# The output becomes read-only while the worker runs, after leakscope's check.
WAITS_IN_LOOP_8 = textwrap.dedent(
    """
    import os
    import time

    KEPT = []

    def iteration():
        KEPT.append(bytearray(100))
        if len(KEPT) == 8:
            open("running", "w").close()
            give_up = time.monotonic() + 60
            while not os.path.exists("go") and time.monotonic() < give_up:
                time.sleep(0.01)
    """
)


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, f"leakscope ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never saw {path.name}"
        time.sleep(0.02)


def _output_dir(tmp_path: Path, where: str) -> tuple[Path, list[str], str]:
    if where == "default":
        directory = tmp_path / ".leakscope"
        directory.mkdir(mode=0o755)
        return directory, [], ".leakscope/last-run.json"
    directory = tmp_path / "out"
    directory.mkdir()
    return directory, ["--json", "out/run.json"], "out/run.json"


@pytest.mark.parametrize("where", ["--json", "default"])
@pytest.mark.parametrize("command", ["trace", "check"])
def test_an_output_made_read_only_during_the_trace_still_shows_the_verdict(
    tmp_path: Path, read_only, command: str, where: str
) -> None:
    (tmp_path / "w.py").write_text(WAITS_IN_LOOP_8)
    directory, args, path = _output_dir(tmp_path, where)
    extra = ["--full"] if command == "check" else []
    proc = _start(tmp_path, command, "w.py", *extra, "-n", "20", *FAST, *args)
    _wait_for(tmp_path / "running", proc)
    read_only(directory)
    (tmp_path / "go").touch()
    done = _finish(proc)
    line = _failed_save(done, path, "cannot write run file", "Permission denied")
    assert not (tmp_path / path).exists(), line
    assert list(directory.iterdir()) == [], "no half-written file is left"


# The same for `leakscope run`: a tick worker that waits at its eighth unit.
TICKS_AND_WAITS = textwrap.dedent(
    """
    import os
    import time

    import leakscope

    KEPT = []
    for i in range(300):
        KEPT.append("x" * 200 + str(i))
        if i == 8:
            open("running", "w").close()
            give_up = time.monotonic() + 60
            while not os.path.exists("go") and time.monotonic() < give_up:
                time.sleep(0.01)
        leakscope.tick()
    """
)


@pytest.mark.parametrize("where", ["--json", "default"])
def test_an_output_made_read_only_during_run_still_shows_the_verdict(
    tmp_path: Path, read_only, where: str
) -> None:
    (tmp_path / "w.py").write_text(TICKS_AND_WAITS)
    directory, args, path = _output_dir(tmp_path, where)
    proc = _start(tmp_path, "run", "--quiet", *args, "--", sys.executable, "w.py")
    _wait_for(tmp_path / "running", proc)
    read_only(directory)
    (tmp_path / "go").touch()
    done = _finish(proc)
    line = _failed_save(done, path, "cannot write run file", "Permission denied")
    assert not (tmp_path / path).exists(), line
    assert list(directory.iterdir()) == [], "no half-written file is left"
