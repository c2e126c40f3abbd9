"""`make test` on a machine without Chromium or Redis: those tests skip with one reason,
unless CI requires them (LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1), where they fail."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT


def _browser_tests(require: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LEAKSCOPE_REQUIRE_SYSTEM_DEPS"}
    env["LEAKSCOPE_CHROMIUM"] = "/nonexistent/chromium"
    if require:
        env["LEAKSCOPE_REQUIRE_SYSTEM_DEPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
         "-rsE", "tests/browser/test_report_browser.py", "-k", "hostile"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def test_browser_tests_skip_with_one_reason_when_chromium_is_missing():
    proc = _browser_tests(require=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(reasons) == 1, proc.stdout
    assert "chromium is not installed (.ci/system-deps installs it)" in reasons[0]
    assert "2 skipped" in proc.stdout


def test_ci_fails_instead_of_skipping():
    proc = _browser_tests(require=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1 requires it" in proc.stdout


# The Redis half: the worker tests' broker (tests/workers/conftest.py, redis_server).
REDIS_TESTS = "broker_unreachable or ctrl_c_saves_what_every_process_gathered"


def _worker_tests_without_redis(require: bool) -> subprocess.CompletedProcess:
    """The Redis-backed worker tests, with every directory that holds a redis-server
    taken off PATH: the machine keeps its Redis, the tests cannot find it."""
    env = {k: v for k, v in os.environ.items() if k != "LEAKSCOPE_REQUIRE_SYSTEM_DEPS"}
    env["PATH"] = os.pathsep.join(
        d for d in env.get("PATH", "").split(os.pathsep)
        if d and not os.path.exists(os.path.join(d, "redis-server"))
    )
    if require:
        env["LEAKSCOPE_REQUIRE_SYSTEM_DEPS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q",
         "-rsE", "tests/workers/test_run_cli.py", "-k", REDIS_TESTS],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )


def test_worker_tests_skip_with_one_reason_when_redis_is_missing():
    proc = _worker_tests_without_redis(require=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # pytest prints a SKIPPED line per test function; each gives the one reason.
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    reasons = {line.split(": ", 1)[1] for line in skipped}
    assert reasons == {"redis-server is not installed (.ci/system-deps installs it)"}, skipped
    assert "3 skipped" in proc.stdout and "passed" not in proc.stdout, proc.stdout


def test_ci_fails_instead_of_skipping_when_redis_is_missing():
    proc = _worker_tests_without_redis(require=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "redis-server is not installed" in proc.stdout, proc.stdout
    assert "LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1 requires it" in proc.stdout, proc.stdout
    assert "skipped" not in proc.stdout, proc.stdout
