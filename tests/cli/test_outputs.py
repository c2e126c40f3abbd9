"""Where runs are written, under contention and on a read-only file system.

Two traces at once in one directory must each save a whole run of their own;
an output that cannot be written is one error line with exit 2 (README: "2 ...
an output that cannot be written"), never a traceback, and once a run has been
made its verdict is shown before that line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

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
