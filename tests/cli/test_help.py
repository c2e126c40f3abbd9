"""What the command line says about itself: `--version`, `-h` on every command, and
help defaults that are the defaults the commands really use."""

from __future__ import annotations

import re

import pytest

import leakscope
from leakscope.model.settings import DEFAULT_ITERATIONS
from tests.conftest import load_json, run_cli

COMMANDS = ["trace", "report", "html", "check", "diff", "run"]


def test_version_prints_one_line_and_exits_0():
    proc = run_cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"leakscope {leakscope.__version__}"]
    assert proc.stderr == ""


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_h_is_help_on_every_command(command):
    args = [command] if command else []
    short, long = run_cli(*args, "-h"), run_cli(*args, "--help")
    assert short.returncode == 0, short.stderr
    assert short.stdout == long.stdout
    assert short.stdout.startswith("Usage: leakscope")
    assert "-h, --help" in short.stdout


def _help(command: str) -> str:
    proc = run_cli(command, "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _option_help(text: str, option: str) -> str:
    """The help of one option, its wrapped lines joined."""
    match = re.search(rf"^\s+(?:-\w, )?{re.escape(option)}\b(.*?)(?=^\s+-|\Z)", text, re.M | re.S)
    assert match, (option, text)
    return " ".join(match.group(1).split())


def test_check_help_states_the_loops_check_really_measures(tmp_path):
    """`check` runs in fast mode by default: the help's default is the run's length."""
    said = _option_help(_help("check"), "--iterations")
    fast = re.search(r"default (\d+)", said)
    assert fast, said
    full = re.search(r"(\d+) with --full", said)
    assert full, said

    run_json = tmp_path / "run.json"
    proc = run_cli("check", "scenarios/static_array.py", "--no-holders", "--json", str(run_json))
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    run = load_json(run_json)
    assert run["mode"] == "fast"
    assert run["settings"]["iterations"] == int(fast.group(1))
    assert int(full.group(1)) == DEFAULT_ITERATIONS


@pytest.mark.parametrize(("option", "default"), [
    ("--warmup", "5"), ("--frames", "10"), ("--timeout", "120"), ("--memory-limit", "512MiB"),
    ("--max-growth", "0B"),
])
def test_check_help_names_every_default(option, default):
    said = _option_help(_help("check"), option)
    assert re.search(rf"default:? {re.escape(default)}\b", said), said
