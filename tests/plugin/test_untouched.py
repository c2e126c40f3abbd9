"""Unmarked tests never reach the engine, as pytest-memray proves for its own unmarked tests."""

from __future__ import annotations

import subprocess
import sys

import leakscope.drive.inprocess
import leakscope.measure.collector

pytest_plugins = ["pytester"]


def test_unmarked_tests_never_reach_the_engine(pytester, monkeypatch):
    calls: list[str] = []
    real_trace = leakscope.drive.inprocess.trace_callable
    real_begin = leakscope.measure.collector.Collector.begin

    def trace_callable(func, settings, target="<callable>"):
        calls.append(f"trace_callable {target}")
        return real_trace(func, settings, target)

    def begin(self):
        calls.append("Collector.begin")
        return real_begin(self)

    monkeypatch.setattr(leakscope.drive.inprocess, "trace_callable", trace_callable)
    monkeypatch.setattr(leakscope.measure.collector.Collector, "begin", begin)
    pytester.makepyfile('''
import pytest
import leakscope

KEPT = []

def test_plain_that_keeps_memory():
    KEPT.extend("x" * 100 for _ in range(1000))

@pytest.mark.parametrize("n", [1, 2])
def test_parametrized(n):
    leakscope.tick()  # outside a leakscope run: does nothing

class TestClass:
    def test_method(self):
        pass

@pytest.mark.leakscope(iterations=10)
def test_the_one_marked():
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "not leakscope")
    result.assert_outcomes(passed=4)
    assert calls == []
    # The same patches do see a marked test, so the assertion above can fail.
    result = pytester.runpytest("-p", "no:cacheprovider", "-m", "leakscope")
    result.assert_outcomes(passed=1)
    assert calls == [
        "trace_callable test_unmarked_tests_never_reach_the_engine.py::test_the_one_marked",
        "Collector.begin",
    ]


def test_loading_the_plugin_imports_no_engine():
    """What `pytest` pays for the plugin in every run: no tracing engine, no analysis."""
    code = (
        "import sys, leakscope.drive.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('leakscope')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    assert "leakscope.drive.pytest_plugin" in loaded
    engine = {"leakscope.drive.inprocess", "leakscope.measure.collector", "leakscope.model.sites",
              "leakscope.analysis", "leakscope.heap", "leakscope.drive.supervisor",
              "leakscope.measure.counters"}
    assert not loaded & engine, sorted(loaded & engine)
