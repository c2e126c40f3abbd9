"""`leakscope attach` refuses what it cannot attach to: one line, exit 2, the target untouched."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leakscope.drive import attach
from tests.conftest import run_cli

EXIT_USAGE = 2


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leakscope: error: "), proc.stderr
    return lines[0]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_no_such_pid():
    pid = dead_pid()
    line = error_line(run_cli("attach", str(pid)))
    assert f"no process with pid {pid}" in line


def test_pid_that_is_not_a_number():
    line = error_line(run_cli("attach", "abc"))
    assert "abc" in line


def test_not_a_python_process():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        line = error_line(run_cli("attach", str(sleeper.pid)))
        assert f"pid {sleeper.pid}" in line and "not a Python process" in line
        assert sleeper.poll() is None  # untouched
    finally:
        sleeper.kill()
        sleeper.wait()


def test_no_debugger(tmp_path: Path):
    """Without gdb on PATH (and no sys.remote_exec), one line says what to install."""
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        empty = tmp_path / "bin"
        empty.mkdir()
        line = error_line(run_cli("attach", str(worker.pid), env={"PATH": str(empty)}))
        assert "gdb" in line and "install" in line
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize(("maps", "exe", "version"), [
    ("7f-7f r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0\n",
     "/usr/bin/uwsgi", (3, 12)),
    ("", "/root/.pyenv/versions/3.9.18/bin/python3.9", (3, 9)),
    ("", "/usr/bin/python3.11", (3, 11)),
    ("", "/usr/bin/sleep", None),
])
def test_python_version_from_maps_or_exe(maps, exe, version):
    assert attach.version_from(maps, exe) == version


def test_older_python_refused():
    with pytest.raises(attach.UsageError, match="Python 3.9, older than 3.10"):
        attach.check_version(1234, (3, 9))


@pytest.mark.parametrize(("scope", "cap", "descendant", "refused"), [
    ("0", False, False, None),
    ("1", False, False, "ptrace_scope is 1"),
    ("1", True, False, None),
    ("1", False, True, None),
    ("2", False, False, "ptrace_scope is 2"),
    ("2", True, False, None),
    ("3", True, False, "ptrace_scope is 3"),
    (None, False, False, None),
])
def test_ptrace_permission(scope, cap, descendant, refused):
    reason = attach.ptrace_refusal(scope, cap, descendant)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_another_users_process():
    if os.getuid() == 0:
        with pytest.raises(attach.UsageError, match="another user's process"):
            attach.check_owner(1234, owner=1000, uid=1000 + 1, root=False)
    else:
        with pytest.raises(attach.UsageError, match="another user's process"):
            attach.check_owner(1234, owner=0, uid=os.getuid(), root=False)
    attach.check_owner(1234, owner=0, uid=0, root=True)


def test_already_traced():
    with pytest.raises(attach.UsageError, match="already traced by pid 77"):
        attach.check_tracer(1234, "Name:\tpython\nTracerPid:\t77\n")
    attach.check_tracer(1234, "Name:\tpython\nTracerPid:\t0\n")


def test_children_without_a_python_child():
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess; subprocess.run(['sleep', '60'])"])
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split():
            assert time.monotonic() < deadline
        line = error_line(run_cli("attach", "--children", str(parent.pid)))
        assert f"pid {parent.pid} has no Python child" in line
    finally:
        parent.kill()
        parent.wait()
