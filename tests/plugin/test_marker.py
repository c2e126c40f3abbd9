"""@pytest.mark.leakscope under pytester: leaking bodies fail, clean ones pass, with fixtures
and parametrize; bad options fail one line; pytest's own buffers are not the test's leak."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

BODIES = '''
import pytest

KEPT = []
SETUPS = []
CALLS = []


@pytest.fixture
def registry():
    SETUPS.append(1)
    return KEPT


@pytest.fixture
def payload():
    return "x" * 100


@pytest.mark.leakscope(iterations=20)
def test_leaks_through_a_fixture(registry, payload):
    registry.append(payload + str(len(registry)))


@pytest.mark.leakscope(iterations=20)
def test_clean(payload):
    CALLS.append(None)
    "".join([payload] * 10)
    CALLS.pop()


@pytest.mark.leakscope(iterations=20)
@pytest.mark.parametrize("n", [1, 50])
def test_clean_parametrized(n, payload):
    [payload[:n] for _ in range(n)]


@pytest.mark.leakscope(iterations=20)
@pytest.mark.parametrize("size", [10, 1000])
def test_leaks_parametrized(size):
    KEPT.append("y" * size + str(len(KEPT)))


def test_fixtures_were_set_up_once_and_the_body_repeated():
    # One setup for the one test that used the fixture; 5 warm-up + 20 measured calls,
    # each appending one item, then the two parametrized leaks with as many each.
    assert SETUPS == [1]
    assert len(KEPT) == 3 * 25
'''


def _line_of(source: str, text: str) -> int:
    """The line of ``text`` in a file pytester writes (it drops the leading blank lines)."""
    return source.strip("\n").splitlines().index(text) + 1


def test_leaking_bodies_fail_and_clean_bodies_pass(pytester):
    path = pytester.makepyfile(BODIES)
    line = f"{path.name}:{_line_of(BODIES, '    registry.append(payload + str(len(registry)))')}"
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=3)
    result.stdout.fnmatch_lines([
        "*test_leaks_through_a_fixture*",
        f"leakscope: LEAK * B/iter, {line}",
        "Leak (reachable*",
        "growing allocation sites:",
        f"  {line} test_leaks_through_a_fixture: *",
    ])
    result.stdout.fnmatch_lines([
        "FAILED *test_leaks_parametrized?10?*",
        "FAILED *test_leaks_parametrized?1000?*",
    ], consecutive=False)
    assert "test_clean" not in "".join(line for line in result.outlines if "FAILED" in line)


def test_budget_above_the_rate_passes(pytester):
    pytester.makepyfile('''
import pytest
KEPT = []

@pytest.mark.leakscope(iterations=20, warmup=2, max_growth="1MiB")
def test_small_leak_within_budget():
    KEPT.append("z" * 100 + str(len(KEPT)))

@pytest.mark.leakscope(iterations=20, warmup=2, max_growth=16)
def test_same_leak_above_a_budget_in_bytes():
    KEPT.append("z" * 100 + str(len(KEPT)))
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED *test_same_leak_above_a_budget_in_bytes*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('iterations="many"', "leakscope: iterations='many': expected a whole number of 1 or more"),
        ("iterations=0", "leakscope: iterations=0: expected a whole number of 1 or more"),
        ("warmup=-1", "leakscope: warmup=-1*"),
        ('max_growth="4XB"', "leakscope: max_growth='4XB': not a size per iteration*"),
        ("iteration=5", "leakscope: @pytest.mark.leakscope: unknown option 'iteration'*"),
        ("5", "leakscope: @pytest.mark.leakscope takes keyword arguments only*"),
    ],
)
def test_bad_marker_options_fail_with_one_line(pytester, marker, message):
    pytester.makepyfile(f'''
import pytest

@pytest.mark.leakscope({marker})
def test_body():
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_marker_and_fixture_together_is_refused(pytester):
    pytester.makepyfile('''
import pytest

@pytest.mark.leakscope(iterations=5)
def test_both(leakscope):
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["leakscope: use either @pytest.mark.leakscope or*"])


def test_an_async_body_is_refused_clearly(pytester):
    pytester.makepyfile('''
import pytest

@pytest.mark.leakscope(iterations=5)
async def test_async():
    pass
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error::RuntimeWarning")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["leakscope: *returned an awaitable*"])


def test_an_error_in_the_body_fails_as_itself(pytester):
    pytester.makepyfile('''
import pytest
import tracemalloc
from leakscope.measure import hook

CALLS = []

@pytest.mark.leakscope(iterations=20)
def test_breaks_on_the_seventh_call():
    CALLS.append(1)
    if len(CALLS) == 7:
        raise ZeroDivisionError("seventh")

def test_tracing_was_switched_off():
    assert not tracemalloc.is_tracing()
    assert hook.installed() is None
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*ZeroDivisionError: seventh*"])


def test_logging_and_warnings_in_the_body_are_not_a_leak(pytester):
    pytester.makepyfile('''
import logging
import warnings

import pytest

log = logging.getLogger("jobs")


@pytest.mark.leakscope(iterations=30)
def test_logs_every_iteration():
    log.warning("job done")


@pytest.mark.leakscope(iterations=30)
def test_caplog_sees_one_iteration_at_a_time(caplog):
    log.warning("once per call")
    assert len(caplog.records) == 1


@pytest.mark.leakscope(iterations=30)
def test_warns_every_iteration():
    warnings.warn("old API", DeprecationWarning)


@pytest.mark.leakscope(iterations=20)
def test_logs_and_fails():
    log.warning("the last words")
    assert False
''')
    # In-process pytester re-registers the already imported plugin, which
    # pytest 9.2 reports as a PytestAssertRewriteWarning: not the body's.
    result = pytester.runpytest("-p", "no:cacheprovider",
                                "-W", "ignore::pytest.PytestAssertRewriteWarning")
    result.assert_outcomes(passed=3, failed=1)
    # The warning reaches pytest's summary once, not once per iteration.
    result.stdout.fnmatch_lines(
        ["*DeprecationWarning: old API*", "*1 failed, 3 passed, 1 warning*"]
    )
    # The failing test's captured log is one iteration's, not every iteration's.
    assert result.stdout.str().count("the last words") == 1


def test_a_real_logging_leak_is_still_found(pytester):
    """Trimming pytest's capture must not hide a handler the code under test leaks."""
    pytester.makepyfile('''
import io
import logging

import pytest

log = logging.getLogger("jobs")
log.propagate = False


@pytest.mark.leakscope(iterations=20)
def test_adds_a_handler_per_job():
    log.addHandler(logging.StreamHandler(io.StringIO()))
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["leakscope: LEAK *"])
