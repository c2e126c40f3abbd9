"""`leakscope run` on real workers from an app environment that has no leakscope.

leakscope is installed as a tool of its own; the app's virtualenv holds only
the app's libraries. The worker commands (celery, gunicorn, rq) come from that
venv's bin directory, and their processes reach leakscope's in-process side
through the private path alone. The venv is built from the same releases as
the test environment's, so pip takes them from its cache.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import expected, load_json
from tests.workers.conftest import worker_env
from tests.workers.test_worker_scenarios import WORKERS, _diagnosis, drive

APP_LIBRARIES = ["celery", "kombu", "redis", "rq", "gunicorn", "packaging"]


@pytest.fixture(scope="module")
def app_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("app") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pins = [f"{name}=={metadata.version(name)}" for name in APP_LIBRARIES]
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
         "--disable-pip-version-check", *pins],
        capture_output=True, text=True, timeout=600,
    )
    if done.returncode != 0:
        pytest.skip(f"could not build the app's venv: {done.stderr.strip().splitlines()[-1:]}")
    has = subprocess.run([str(venv / "bin" / "python"), "-c", "import leakscope"],
                         capture_output=True, cwd=venv)
    assert has.returncode != 0, "the app's venv must not have leakscope"
    return venv


@pytest.mark.slow
@pytest.mark.parametrize("name", ["celery_leak", "wsgi_leak", "rq_simple_leak"])
def test_worker_from_an_app_venv_without_leakscope(name, app_venv, redis_url, tmp_path):
    scenario = WORKERS / f"{name}.py"
    want = expected(scenario)
    out = tmp_path / "run.json"
    env = worker_env(redis_url)
    env["PATH"] = f"{app_venv / 'bin'}:{env['PATH']}"
    proc, stdout, stderr = drive(scenario, out, env)
    assert proc.returncode == 0, stderr + stdout
    assert "cannot import leakscope" not in stderr
    run = load_json(out)
    # Each process was started from the app's venv (its console script's path is argv[0]).
    commands = [p["process"]["command"] for p in run["processes"]]
    assert commands and all(str(app_venv / "bin") in command for command in commands), commands
    seen = _diagnosis(run)
    assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == want["kind"], seen
    holders = [h for h in run["holders"] if h["growing"]]
    assert holders and holders[0]["path"] == want["holder"], seen
