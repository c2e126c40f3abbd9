"""Shared helpers: run the real CLI in a subprocess, read run files, keep state clean."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from leakscope.measure import hook

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def run_cli(*args: str, cwd: Path = ROOT, timeout: float = 180, env: dict | None = None):
    """Run ``python -m leakscope ARGS`` and return the completed process."""
    full_env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "leakscope", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
    )


def need_program(name: str, path: str | None) -> str:
    """A system program a test needs (chromium, redis-server), or skip with one reason.

    `make test` installs them with .ci/system-deps where it can; where it cannot,
    those tests skip. CI (.ci/run) sets LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1, and a
    missing program fails there instead.
    """
    if path and os.access(path, os.X_OK):
        return path
    reason = f"{name} is not installed (.ci/system-deps installs it)"
    if os.environ.get("LEAKSCOPE_REQUIRE_SYSTEM_DEPS") == "1":
        pytest.fail(f"{reason}; LEAKSCOPE_REQUIRE_SYSTEM_DEPS=1 requires it", pytrace=False)
    pytest.skip(reason)


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def expected(scenario: Path) -> dict[str, str]:
    """The ``Expected:`` and ``Holder:`` lines of a scenario's docstring."""
    text = scenario.read_text()
    result: dict[str, str] = {}
    for label in ("Expected", "Holder", "Bounded"):
        match = re.search(rf"^{label}: (.*)$", text, re.M)
        if match:
            for part in match.group(1).split():
                if "=" in part:
                    key, value = part.split("=", 1)
                    result[key] = value
                else:
                    result[label.lower()] = part
    return result


@pytest.fixture(autouse=True)
def _leakscope_state_is_reset():
    """Every test must leave tracemalloc off and the tick hook uninstalled."""
    yield
    assert hook.installed() is None, "a test left leakscope's tick hook installed"
    assert not tracemalloc.is_tracing(), "a test left tracemalloc running"
