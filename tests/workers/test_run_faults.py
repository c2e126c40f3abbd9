"""`leakscope run` among a worker's own arrangements and a hostile file system.

The worker's own ``sitecustomize.py`` still runs behind leakscope's start-up
hook; the run directory leakscope makes in the temporary folder is private;
a ``.leakscope/`` someone else could write to is refused before the command
starts. Each case writes a small worker into ``tmp_path`` and runs the real CLI.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import run_cli

EXIT_USAGE = 2

# The worker's own start-up customisation, as a Debian Python or a project sets one:
# it sets an environment variable and leaves a marker per process it runs in.
WORKER_SITECUSTOMIZE = textwrap.dedent(
    """
    import json
    import os

    os.environ["WORKER_SITECUSTOMIZE"] = "ran"
    try:
        from leakscope.drive import agent
        armed = agent.current() is not None
    except ImportError:
        armed = None
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "sitecustomize-ran-%d.json" % os.getpid()), "w") as out:
        json.dump({"armed": armed}, out)
    """
)

# A tick worker that refuses to work (exit 17) unless its sitecustomize ran.
SITE_WORKER = textwrap.dedent(
    """
    import json
    import os
    import sys

    import leakscope
    import sitecustomize

    if os.environ.get("WORKER_SITECUSTOMIZE") != "ran":
        sys.exit(17)
    with open(sys.argv[1], "w") as out:
        json.dump({"pid": os.getpid(), "sitecustomize": sitecustomize.__file__}, out)
    KEPT = []
    for i in range(int(sys.argv[2])):
        if sys.argv[3] == "leak":
            KEPT.append("x" * 200 + str(i))   # the leak: kept for ever
        else:
            data = ["x" * 200 + str(i)]
        leakscope.tick()
    """
)


def _site_worker(tmp_path: Path) -> tuple[Path, Path]:
    app = tmp_path / "app"
    app.mkdir()
    (app / "sitecustomize.py").write_text(WORKER_SITECUSTOMIZE)
    (app / "worker.py").write_text(SITE_WORKER)
    return app, app / "worker.py"


def test_the_workers_own_sitecustomize_still_runs_and_the_verdict_is_right(tmp_path):
    """leakscope's start-up hook shadows the worker's sitecustomize.py on PYTHONPATH;
    it must run it after arming the process, and the leak must still be found."""
    app, worker = _site_worker(tmp_path)
    seen, out = tmp_path / "seen.json", tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(worker),
                   str(seen), "300", "leak", cwd=tmp_path, env={"PYTHONPATH": str(app)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worker_seen = json.loads(seen.read_text())
    # `import sitecustomize` in the worker is the worker's own module, not leakscope's.
    assert worker_seen["sitecustomize"] == str(app / "sitecustomize.py"), worker_seen
    # It ran in the worker, which leakscope had armed before it.
    marker = app / f"sitecustomize-ran-{worker_seen['pid']}.json"
    assert json.loads(marker.read_text()) == {"armed": True}
    run = json.loads(out.read_text())
    (process,) = run["processes"]
    assert process["process"]["pid"] == worker_seen["pid"]
    assert process["process"]["traced_units"] > 0
    assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable", run["verdict"]
    assert "worker.py:" in run["verdict"]["summary"], run["verdict"]["summary"]
    assert "LEAK" in proc.stdout


def test_the_workers_own_sitecustomize_runs_and_a_clean_worker_is_no_leak(tmp_path):
    app, worker = _site_worker(tmp_path)
    seen, out = tmp_path / "seen.json", tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(worker),
                   str(seen), "150", "clean", cwd=tmp_path, env={"PYTHONPATH": str(app)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worker_seen = json.loads(seen.read_text())
    assert worker_seen["sitecustomize"] == str(app / "sitecustomize.py"), worker_seen
    marker = app / f"sitecustomize-ran-{worker_seen['pid']}.json"
    assert json.loads(marker.read_text()) == {"armed": True}
    run = json.loads(out.read_text())
    assert run["verdict"]["leak"] is False, run["verdict"]
    assert "NO LEAK" in proc.stdout


# A tick worker that looks, mid-run, at the run directory leakscope made for it.
LOOKS_AT_ITS_RUN_DIRECTORY = textwrap.dedent(
    """
    import glob
    import json
    import os
    import stat
    import sys
    import tempfile

    import leakscope

    for i in range(40):
        leakscope.tick()
    found = {}
    for directory in glob.glob(os.path.join(tempfile.gettempdir(), "leakscope-run-*")):
        info = os.lstat(directory)
        found[directory] = {"mode": stat.S_IMODE(info.st_mode), "uid": info.st_uid,
                            "is_dir": stat.S_ISDIR(info.st_mode)}
    with open(sys.argv[1], "w") as out:
        json.dump(found, out)
    for i in range(40):
        leakscope.tick()
    """
)


def test_the_run_directory_is_private_while_it_exists(tmp_path):
    """The run directory in $TMPDIR holds every process's events (its allocation
    sites, its command line): 0700 and the user's own, during the run and when kept."""
    worker = tmp_path / "looks.py"
    worker.write_text(LOOKS_AT_ITS_RUN_DIRECTORY)
    tmp = tmp_path / "tmp"
    tmp.mkdir(mode=0o777)
    tmp.chmod(0o777)  # a shared temporary folder, as /tmp is (umask aside)
    seen = tmp_path / "seen.json"
    proc = run_cli("run", "--quiet", "--keep-run-dir", "--json", str(tmp_path / "run.json"),
                   "--", sys.executable, str(worker), str(seen), cwd=tmp_path,
                   env={"TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    during = json.loads(seen.read_text())
    (kept,) = tmp.iterdir()
    assert f"run directory kept: {kept}" in proc.stdout, proc.stdout
    assert during == {str(kept): {"mode": 0o700, "uid": os.geteuid(), "is_dir": True}}, during
    info = os.lstat(kept)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()


STARTS = textwrap.dedent(
    """
    import leakscope

    open("started", "w").close()
    KEPT = []
    for i in range(60):
        KEPT.append("x" * 100 + str(i))
        leakscope.tick()
    """
)


def _planted_by_another_user(path: Path) -> None:
    """A ``.leakscope/`` in a shared directory, made beforehand by someone else."""
    if os.geteuid() == 0:
        path.mkdir()
        os.chown(path, 65534, 65534)
        return
    others = [p for p in ("/var/tmp", "/tmp") if Path(p).stat().st_uid != os.geteuid()]
    if not others:
        pytest.skip("no directory owned by another user to point at")
    path.symlink_to(others[0])


@pytest.mark.parametrize("how", ["other-owner", "world-writable"])
def test_run_refuses_a_leakscope_dir_that_is_not_ours(tmp_path, how):
    """As trace and check do (tests/cli/test_hostile.py): refused in one line, exit 2,
    before the command is started, and nothing written there."""
    (tmp_path / "w.py").write_text(STARTS)
    shared = tmp_path / ".leakscope"
    if how == "other-owner":
        _planted_by_another_user(shared)
    else:
        shared.mkdir()
        shared.chmod(0o777)
    proc = run_cli("run", "--", sys.executable, "w.py", cwd=tmp_path, timeout=60)
    assert proc.returncode == EXIT_USAGE, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    says = "owned by another user" if how == "other-owner" else "writable by others"
    assert lines[0].startswith("leakscope: error: ") and ".leakscope" in lines[0], lines[0]
    assert says in lines[0], lines[0]
    assert not (tmp_path / "started").exists(), "the command was started all the same"
    assert not (shared / "last-run.json").exists()


def test_run_keeps_its_run_in_our_own_leakscope_dir(tmp_path):
    """The counterpart: a ``.leakscope/`` of our own, not writable by others, is used."""
    (tmp_path / "w.py").write_text(STARTS)
    (tmp_path / ".leakscope").mkdir(mode=0o755)
    proc = run_cli("run", "--quiet", "--", sys.executable, "w.py", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "started").exists()
    assert json.loads((tmp_path / ".leakscope" / "last-run.json").read_text())["verdict"]
