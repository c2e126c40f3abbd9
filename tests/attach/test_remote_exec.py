"""CPython 3.14's ``sys.remote_exec`` route, with a fake (no 3.14 on this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from leakscope.drive import attach
from leakscope.model.errors import TargetError


def target(version: tuple[int, int]) -> attach.Target:
    return attach.Target(pid=4321, version=version, exe="/usr/bin/python3", entry=0x1000)


def test_remote_exec_gets_the_bootstrap_script(tmp_path: Path):
    script = tmp_path / "boot.py"
    script.write_text("pass\n")
    calls: list[tuple[int, str]] = []
    injection = attach.inject(target((3, 14)), script, tmp_path,
                              remote_exec=lambda pid, path: calls.append((pid, path)))
    assert calls == [(4321, str(script))]
    assert injection.route == "sys.remote_exec"
    assert injection.stopped_seconds == 0.0  # no debugger: the process is never stopped


def test_remote_exec_failure_is_one_line(tmp_path: Path):
    def refuse(pid: int, path: str) -> None:
        raise RuntimeError("Cannot attach: remote debugging is disabled")

    with pytest.raises(TargetError, match="sys.remote_exec failed for pid 4321: Cannot attach"):
        attach.inject(target((3, 14)), tmp_path / "boot.py", tmp_path, remote_exec=refuse)


def test_remote_exec_chosen_only_for_a_matching_314(monkeypatch):
    monkeypatch.setattr(attach.sys, "remote_exec", lambda pid, path: None, raising=False)
    monkeypatch.setattr(attach.sys, "version_info", (3, 14, 0, "final", 0))
    assert attach._remote_exec_fits((3, 14))
    assert not attach._remote_exec_fits((3, 13))  # gdb for an older target
    monkeypatch.delattr(attach.sys, "remote_exec")
    assert not attach._remote_exec_fits((3, 14))


def test_bootstrap_leaves_nothing_in_main(tmp_path: Path):
    """What PyRun_SimpleString runs in ``__main__`` defines no name there."""
    script = tmp_path / "boot.py"
    script.write_text("import sys\nran = sys.modules[__name__] if __name__ in sys.modules "
                      "else __name__\nRESULT.append(ran)\n".replace("RESULT", "_seen"))
    seen: list = []
    main: dict = {"__builtins__": {**__builtins__, "_seen": seen}
                  if isinstance(__builtins__, dict) else {**vars(__builtins__), "_seen": seen}}
    exec(attach.bootstrap_line(script), main)  # noqa: S102 - the line under test
    assert seen == ["__leakscope_attach__"]
    assert set(main) == {"__builtins__"}


def test_in_process_side_spawns_nothing_to_find_libc():
    """What attach loads into a worker never runs ``ldconfig`` (ctypes.util.find_library
    does, through subprocess) and stays small: libc is already in the process."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    probe = ("import sys\nbefore = set(sys.modules)\n"
             "import leakscope.drive.attached, leakscope.measure.worker_collector\n"
             "import leakscope.heap.probe\n"
             "from leakscope.measure import counters\n"
             "assert counters._mallinfo2 is not None\n"
             "print(sorted(set(sys.modules) - before & {'subprocess', 'ctypes.util', "
             "'shutil', 'tempfile'}))\n")
    done = subprocess.run([sys.executable, "-S", "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
