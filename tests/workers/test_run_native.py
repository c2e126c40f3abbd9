"""A C extension's native leak in a real worker process, through `leakscope run` (issue 13).

The worker is scenarios/native/ext_consumer.py, a consumer loop that calls
``leakscope.tick()`` per message and the test C extension (leakext) in each:
under the default ``--sample auto`` its malloc counter grows, so its traced
window runs under memray too where the worker's Python can import it, which
names the user line and the native function. Where memray cannot run there, the
window locates with tracemalloc and says why in one line, as fast mode does.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_json, run_cli

NATIVE = ROOT / "scenarios" / "native"
CONSUMER = "scenarios/native/ext_consumer.py"
HAS_MEMRAY = importlib.util.find_spec("memray") is not None
needs_memray = pytest.mark.skipif(not HAS_MEMRAY, reason="memray is not installed "
                                  "(pip install 'leakscope[native]')")
# Warm-up (10), growth suspected at 100 units and confirmed at 200, the 40-unit window and the
# untraced units after it that the verdict reads.
UNITS = "400"


@pytest.fixture(scope="module", autouse=True)
def built_extension() -> None:
    done = subprocess.run([sys.executable, str(NATIVE / "build.py")], capture_output=True,
                          text=True, timeout=120)
    if done.returncode != 0:
        pytest.skip(f"cannot build the C extension: {done.stderr.strip().splitlines()[-1:]}")


def _run(tmp_path: Path, *command: str, extra: tuple[str, ...] = (), env: dict | None = None):
    """`leakscope run` with the default locator (its window runs memray beside
    tracemalloc because the watch saw malloc's bytes grow) unless ``env`` says."""
    out = tmp_path / "run.json"
    env = {"LEAKSCOPE_LOCATOR": "auto", **(env or {})}
    proc = run_cli("run", "--quiet", "--units", UNITS, "--timeout", "60", "--json", str(out),
                   *extra, "--", *command, env=env)
    return proc, (load_json(out) if out.exists() else None)


def _process(run: dict) -> dict:
    (process,) = run["processes"]
    return process


@needs_memray
def test_run_names_a_native_leaks_user_line_and_function(tmp_path):
    html = tmp_path / "run.html"
    proc, run = _run(tmp_path, sys.executable, CONSUMER,
                     extra=("--keep-run-dir", "--html", str(html)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kept = Path(proc.stdout.split("run directory kept: ")[1].split()[0])
    try:
        # memray's capture lived in the run directory, and was removed once read.
        assert not [p.name for p in kept.iterdir() if "memray" in p.name]
    finally:
        shutil.rmtree(kept, ignore_errors=True)
    process = _process(run)
    assert process["verdict"]["leak"] is True and process["verdict"]["kind"] == "native", \
        process["verdict"]
    assert process["observations"]["locator"]["engine"] == "memray"
    site = process["sites"][0]
    assert site["engine"] == "memray" and site["growing"] is True, site
    assert site["native"]["function"] == "leakext_keep_buffer"
    assert site["native"]["library"].startswith("leakext")
    assert site["user_frame"] == {"file": CONSUMER, "line": 31, "function": "handle"}
    # The window's units only: the memray window opened with the traced window.
    assert process["observations"]["locator"]["loops"] == process["process"]["traced_units"]
    # The top level is the leaking process's, as every reader expects.
    assert run["verdict"]["kind"] == "native"
    assert run["sites"][0]["native"]["function"] == "leakext_keep_buffer"
    assert f"under `{CONSUMER}:31`" in run["verdict"]["summary"]
    assert "located with memray" in proc.stdout
    assert "native leakext_keep_buffer (leakext" in proc.stdout
    page = html.read_text()
    assert "leakext_keep_buffer" in page and CONSUMER in page


@needs_memray
def test_run_with_memray_asked_for_names_the_native_leak_too(tmp_path):
    proc, run = _run(tmp_path, sys.executable, CONSUMER, env={"LEAKSCOPE_LOCATOR": "memray"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    process = _process(run)
    assert process["observations"]["locator"]["engine"] == "memray"
    assert process["sites"][0]["native"]["function"] == "leakext_keep_buffer"


def test_run_with_the_tracemalloc_locator_has_no_native_site(tmp_path):
    proc, run = _run(tmp_path, sys.executable, CONSUMER,
                     env={"LEAKSCOPE_LOCATOR": "tracemalloc"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    process = _process(run)
    assert process["observations"]["locator"]["engine"] == "tracemalloc"
    assert not [s for s in process["sites"] if s.get("native") or s["engine"] == "memray"]
    assert "memray" not in proc.stdout.replace("located with tracemalloc", "")


def test_run_worker_python_without_memray_falls_back_with_one_line(tmp_path):
    """The worker's own interpreter (a venv without memray) decides, not leakscope's."""
    venv = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    proc, run = _run(tmp_path, str(venv / "bin" / "python"), CONSUMER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    process = _process(run)
    locator = process["observations"]["locator"]
    assert locator["engine"] == "tracemalloc", locator
    note = "memray is not importable by the worker's Python"
    assert note in locator["note"]
    assert sum(note in line for line in proc.stdout.splitlines()) == 1, proc.stdout
    assert not [s for s in process["sites"] if s["engine"] == "memray"]


@needs_memray
def test_run_worker_with_its_own_tracker_keeps_it(tmp_path):
    own = tmp_path / "own.bin"
    worker = tmp_path / "own_tracker.py"
    worker.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(NATIVE)!r})\n"
        "import memray\n"
        "import ext_consumer\n\n"
        f"with memray.Tracker({str(own)!r}):\n"
        "    ext_consumer.main()\n"
    )
    proc, run = _run(tmp_path, sys.executable, str(worker))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    locator = _process(run)["observations"]["locator"]
    assert locator["engine"] == "tracemalloc", locator
    assert "already runs a memray Tracker" in locator["note"]
    assert "already runs a memray Tracker" in proc.stdout
    assert own.exists()  # the worker's own Tracker went on to write its capture


@needs_memray
def test_run_with_too_few_frames_for_memray_says_so(tmp_path):
    proc, run = _run(tmp_path, sys.executable, CONSUMER, extra=("--frames", "3"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    locator = _process(run)["observations"]["locator"]
    assert locator["engine"] == "tracemalloc"
    assert "needs --frames 5 or more" in proc.stdout
