"""The marker and the fixture under pytest-xdist: each worker traces its own tests."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_marker_and_fixture_with_two_workers(pytester):
    pytester.makeconftest('''
import tracemalloc

import pytest

from leakscope.measure import hook


@pytest.fixture(autouse=True)
def _state_is_reset_in_this_worker():
    yield
    assert hook.installed() is None, "the tick hook was left installed"
    assert not tracemalloc.is_tracing(), "tracemalloc was left running"
''')
    pytester.makepyfile('''
import pytest

KEPT = []


@pytest.fixture
def payload():
    return "p" * 80


@pytest.mark.leakscope(iterations=20)
@pytest.mark.parametrize("n", range(4))
def test_leaks(n, payload):
    KEPT.append(payload + str(len(KEPT)))


@pytest.mark.leakscope(iterations=20)
@pytest.mark.parametrize("n", range(4))
def test_clean(n, payload):
    "-".join([payload] * n)


def test_fixture_loop(leakscope):
    seen = []
    with leakscope.loop(iterations=20):
        while True:
            seen.append("s" * 40 + str(len(seen)))
            leakscope.tick()


def test_unmarked():
    KEPT.append("not traced")
''')
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=5)
    result.stdout.fnmatch_lines(["*2 workers*"])
    assert "error" not in result.stdout.str().splitlines()[-1]
