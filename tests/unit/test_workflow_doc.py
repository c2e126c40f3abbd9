"""docs/github-actions-leakscope.yml is valid YAML whose steps name real leakscope commands."""

from __future__ import annotations

import re
import shlex

import typer
import yaml

from leakscope.cli import app
from tests.conftest import ROOT

WORKFLOW = ROOT / "docs" / "github-actions-leakscope.yml"


def _workflow() -> dict:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def _steps() -> list[dict]:
    jobs = _workflow()["jobs"]
    return [step for job in jobs.values() for step in job["steps"]]


def _invocations() -> list[list[str]]:
    """Every `leakscope ...` command line in the steps' shell scripts, as words."""
    found = []
    for step in _steps():
        for line in step.get("run", "").splitlines():
            line = line.strip()
            if re.match(r"^leakscope\s", line):
                found.append(shlex.split(line))
    return found


def test_it_is_a_workflow_run_on_pushes_and_pull_requests():
    data = _workflow()
    # YAML 1.1 reads the key `on` as True.
    triggers = data.get("on", data.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    assert all("runs-on" in job and job["steps"] for job in data["jobs"].values())


def test_every_leakscope_command_it_names_is_real():
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    invocations = _invocations()
    assert [words[1] for words in invocations] == ["check", "html"]
    for words in invocations:
        command = commands[words[1]]
        options = {name for param in command.params for name in param.opts}
        used = [w for w in words[2:] if w.startswith("-")]
        assert used, words
        assert set(used) <= options, (words, sorted(options))


def test_the_reports_check_writes_are_uploaded():
    (check,) = [w for w in _invocations() if w[1] == "check"]
    junit = check[check.index("--junit") + 1]
    runs = check[check.index("--json") + 1]
    (upload,) = [s for s in _steps() if s.get("uses", "").startswith("actions/upload-artifact")]
    paths = upload["with"]["path"].split()
    assert junit in paths
    assert any(p.rstrip("/") == runs for p in paths)
    assert upload.get("if") == "${{ !cancelled() }}"
