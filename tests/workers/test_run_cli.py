"""`leakscope run` on bad input, on Ctrl-C, and its run file read by every other command."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from tests.conftest import ROOT, load_json, run_cli
from tests.workers.conftest import leakscope_popen, worker_env

SLEEPER = "import time; time.sleep(60)"


def _one_line_error(proc, code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("leakscope: error:"), proc.stderr
    assert text in last, last


@pytest.mark.parametrize(
    ("command", "code", "text"),
    [
        (["/bin/ls"], 2, "not a Python program"),
        (["no-such-worker-command"], 2, "command not found"),
        ([sys.executable, "-c", "pass"], 2, "without completing a unit of work"),
        ([sys.executable, "-c", "import sys; print('boom'); sys.exit(4)"], 3,
         "exited with code 4"),
        ([sys.executable, "-c", SLEEPER], 3, "no unit of work completed within 2s"),
        ([], 2, "Missing argument"),
    ],
    ids=["not-python", "not-found", "exits-at-once", "exits-failing", "no-unit", "no-command"],
)
def test_bad_command(command, code, text, tmp_path):
    proc = run_cli("run", "--quiet", "--timeout", "2", "--json", str(tmp_path / "r.json"),
                   "--", *command)
    _one_line_error(proc, code, text)
    if "started" in text or code == 3 and "within" in text:
        assert "python -c (pid " in proc.stderr


def test_a_window_too_short_to_locate_anything_is_refused(tmp_path):
    proc = run_cli("run", "--quiet", "--trace-units", "20", "--json", str(tmp_path / "r.json"),
                   "--", sys.executable, "-c", "pass")
    _one_line_error(proc, 2, "--trace-units 20: expected 0 (no limit) or at least 32")


def test_no_unit_names_the_processes_that_started(tmp_path):
    proc = run_cli("run", "--quiet", "--timeout", "2", "--", sys.executable, "-c", SLEEPER)
    _one_line_error(proc, 3, "none completed a task, job or request")
    assert "started python -c (pid " in proc.stderr


def test_rq_broker_unreachable_shows_the_workers_own_error(tmp_path, redis_url):
    env = worker_env(redis_url)
    proc = run_cli("run", "--quiet", "--timeout", "20", "--", "rq", "worker", "--burst",
                   "--url", "redis://127.0.0.1:1/0", env=env)
    # The worker's own error passes through, above leakscope's one line.
    _one_line_error(proc, 3, "its own output is above")
    assert "Connection refused" in proc.stderr


def test_celery_broker_unreachable_shows_the_workers_own_error(tmp_path, redis_url):
    env = {**worker_env(redis_url), "LEAKSCOPE_BROKER": "redis://127.0.0.1:1/0"}
    proc = run_cli("run", "--quiet", "--timeout", "5", "--", "celery", "-A", "celery_clean",
                   "worker", "--pool=solo", env=env)
    _one_line_error(proc, 3, "its own output is above")
    assert "Cannot connect" in proc.stderr
    assert "celery worker (solo pool)" in proc.stderr


def test_ctrl_c_saves_what_every_process_gathered(tmp_path, redis_url):
    out = tmp_path / "run.json"
    proc = leakscope_popen(["run", "--quiet", "--json", str(out), "--",
                            "python", "scenarios/workers/consumer_tick.py"],
                           worker_env(redis_url))
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    run = load_json(out)
    assert run["verdict"]["partial"] is True
    assert run["observations"]["command"]["stopped_because"] == "interrupted"
    assert sum(len(p["loops"]) for p in run["processes"]) > 20


def test_run_file_is_read_by_report_html_check_and_diff(tmp_path, redis_url):
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--sample", "1", "--units", "80", "--json", str(out), "--",
                   "python", "scenarios/workers/consumer_tick.py", env=worker_env(redis_url))
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    assert run["schema"] == "leakscope.run/1"
    assert run["verdict"]["leak"] is True
    assert len(run["processes"]) == 1
    assert run["processes"][0]["process"]["role"] == "consumer_tick.py"

    report = run_cli("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "consumer_tick.Connection.heartbeats" in report.stdout

    page = tmp_path / "run.html"
    html = run_cli("html", str(out), "-o", str(page))
    assert html.returncode == 0, html.stderr
    assert "consumer_tick.Connection.heartbeats" in page.read_text()

    check = run_cli("check", str(out))
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.startswith("leakscope: LEAK")

    diff = run_cli("diff", str(out), str(out), "--fail-on-new")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert (ROOT / "scenarios" / "workers" / "consumer_tick.py").exists()
