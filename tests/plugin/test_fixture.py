"""The ``leakscope`` fixture: trace(func) and loop() for tests that drive their own loop."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_trace_fails_a_leak_and_returns_the_run(pytester):
    pytester.makepyfile('''
KEPT = []

def test_trace_leak(leakscope):
    leakscope.trace(lambda: KEPT.append("k" * 64 + str(len(KEPT))), iterations=20)

def test_trace_clean(leakscope):
    run = leakscope.trace(lambda: [str(i) for i in range(50)], iterations=20)
    assert run.verdict.leak is False
    assert len(run.measured) == 20

def test_trace_measures_only(leakscope):
    run = leakscope.trace(lambda: KEPT.append("m" * 64 + str(len(KEPT))), iterations=20,
                          check=False)
    assert run.verdict.leak is True and run.verdict.kind == "reachable"
    assert leakscope.runs == [run]
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*_ test_trace_leak _*", "leakscope: LEAK *"])


def test_loop_for_a_test_that_drives_its_own_loop(pytester):
    pytester.makepyfile('''
import itertools

import leakscope as leakscope_module
import pytest

SEEN = set()


def consume(queue, handle):
    """Code under test with its own loop that already calls leakscope.tick()."""
    for n in itertools.count():
        handle(f"{queue}-{n:08d}")
        leakscope_module.tick()


def test_consumer_leaks(leakscope):
    with leakscope.loop(iterations=20):
        consume("orders", SEEN.add)


def test_while_true_loop_is_clean(leakscope):
    recent = []
    with leakscope.loop(iterations=20) as loop:
        while True:
            recent.append("x" * 50)
            del recent[:-3]
            leakscope.tick()
    assert loop.run is not None and loop.run.verdict.leak is False


def test_loop_ending_early_fails(leakscope):
    with leakscope.loop(iterations=20):
        for _ in range(10):
            leakscope.tick()


def test_error_inside_the_loop_is_the_test_error(leakscope):
    with leakscope.loop(iterations=20):
        raise KeyError("broken consumer")


def test_nested_tracing_is_refused(leakscope):
    with leakscope.loop(iterations=20, check=False):
        leakscope.trace(lambda: None)
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=4)
    result.stdout.fnmatch_lines([
        "*_ test_consumer_leaks _*",
        "leakscope: LEAK *",
        "*_ test_loop_ending_early_fails _*",
        "leakscope: the loop ended after 10 tick(s); it needs warm-up (5) + iterations (20) = 25",
        "*_ test_error_inside_the_loop_is_the_test_error _*",
        "E * KeyError: 'broken consumer'",
        "*_ test_nested_tracing_is_refused _*",
        "leakscope: leakscope is already tracing in this process",
    ], consecutive=False)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("leakscope.trace(lambda: None, iterations=0)", "leakscope: iterations=0*"),
        ("leakscope.trace(lambda: None, max_growth='big')",
         "leakscope: max_growth='big': not a size per iteration*"),
        ("leakscope.loop(warmup='later')", "leakscope: warmup='later'*"),
    ],
)
def test_bad_fixture_arguments_fail_with_one_line(pytester, call, message):
    pytester.makepyfile(f'''
def test_call(leakscope):
    {call}
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])


def test_fixture_in_this_session(leakscope):
    """The plugin is installed by entry point: this very suite can use the fixture."""
    run = leakscope.trace(lambda: None, iterations=10, check=False)
    assert run.verdict is not None and not run.verdict.leak
    assert run.target == "tests/plugin/test_fixture.py::test_fixture_in_this_session::<lambda>"


def test_loop_failure_has_no_chained_exception_above_it(pytester):
    """A leak found by loop() is raised on its own: no "During handling of the above
    exception" left over from the StopTracing that ended the loop."""
    pytester.makepyfile('''
import itertools

import leakscope as leakscope_module

SEEN = set()


def test_consumer_leaks(leakscope):
    with leakscope.loop(iterations=20):
        for n in itertools.count():
            SEEN.add(f"orders-{n:08d}")
            leakscope_module.tick()
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*_ test_consumer_leaks _*", "leakscope: LEAK *"])
    result.stdout.no_fnmatch_line("*During handling of the above exception*")
    result.stdout.no_fnmatch_line("*StopTracing*")
    section = result.stdout.str().split("test_consumer_leaks _", 1)[1]
    assert section.lstrip("_ \n").startswith("leakscope: LEAK"), section
