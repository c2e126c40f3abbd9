"""Every scenario as a marked test: the leaks fail, the negatives pass, under pytest."""

from __future__ import annotations

import pytest

from tests.conftest import SCENARIOS, expected

pytest_plugins = ["pytester"]

CASES = sorted(p for p in SCENARIOS.glob("*.py") if "Expected:" in p.read_text())

LOAD = '''
import importlib.util
import sys

import pytest

spec = importlib.util.spec_from_file_location({name!r}, {path!r})
mod = importlib.util.module_from_spec(spec)
sys.modules[{name!r}] = mod
spec.loader.exec_module(mod)
'''

# A worker with iteration(), setup() and teardown(), as `leakscope trace` runs it.
# A bounded container still filling is told from a leak by the container
# search, so those scenarios ask for it.
ITERATION = '''
@pytest.fixture
def worker():
    getattr(mod, "setup", lambda: None)()
    yield mod
    getattr(mod, "teardown", lambda: None)()


@pytest.mark.leakscope(holders={holders})
def test_scenario(worker):
    worker.iteration()
'''

# A script with its own loop that calls leakscope.tick(): the fixture's loop().
TICK_SCRIPT = '''
def test_scenario(leakscope):
    with leakscope.loop(holders={holders}):
        mod.main("orders")
'''


@pytest.mark.parametrize("scenario", CASES, ids=lambda p: p.stem)
def test_marker_on_scenario(pytester, monkeypatch, scenario):
    want = expected(scenario)
    template = ITERATION if "def iteration(" in scenario.read_text() else TICK_SCRIPT
    holders = "bounded" in want
    pytester.makepyfile(
        LOAD.format(name=scenario.stem, path=str(scenario)) + template.format(holders=holders)
    )
    # The exact malloc counter (glibc's tcache off), so native leaks are seen
    # in the test process as they are in the CLI's traced child.
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    if want["leak"] == "yes":
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["*leakscope: LEAK *"])
        if want["line"] != "-":
            # The scenario is imported by path: the line to open is in the scenario's file.
            result.stdout.fnmatch_lines([f"leakscope: LEAK *B/iter*, *{scenario.name}:*"])
    else:
        result.assert_outcomes(passed=1)
