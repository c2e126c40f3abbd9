"""The pytest plugin: ``@pytest.mark.leakscope`` and the ``leakscope`` fixture, by entry point.

The marker runs a test's body over and over under the same engine as
``leakscope trace`` (``leakscope.drive.inprocess``), with the fixture values pytest
already resolved, and fails the test with the verdict and the growing sites
when it leaks above the budget. The fixture serves tests that drive their
own loop. A test with neither never reaches the engine: this module imports
nothing heavy, and the hook returns at once when there is no marker.

Each pytest-xdist worker is its own process with its own tracemalloc and
tick hook, and a marked test runs wholly inside one worker, so nothing here
is shared between workers.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
import warnings
from collections.abc import Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pytest

from leakscope.measure import hook
from leakscope.measure.hook import StopTracing
from leakscope.model.settings import DEFAULT_FRAMES, DEFAULT_ITERATIONS, DEFAULT_WARMUP

if TYPE_CHECKING:
    from leakscope.drive.inprocess import InProcessTrace
    from leakscope.model.runfile import Run
    from leakscope.model.settings import Settings

MARKER = "leakscope"
FIXTURE = "leakscope"
OPTIONS = ("iterations", "warmup", "max_growth", "frames", "holders")
# The container search walks the heap from every module, and a test process
# holds all of pytest besides the code under test: off unless asked for.
DEFAULT_HOLDERS = False
RUN_KEY = pytest.StashKey["Run"]()
# Distinct warnings kept from a repeated body and re-issued once it ends.
KEPT_WARNINGS = 20


def pytest_configure(config: pytest.Config) -> None:
    # The runner's own threads, alive before any fixture or test starts one.
    hook.threads_before = frozenset(sys._current_frames())
    config.addinivalue_line(
        "markers",
        f"{MARKER}(iterations={DEFAULT_ITERATIONS}, warmup={DEFAULT_WARMUP}, max_growth='0B', "
        f"frames={DEFAULT_FRAMES}, holders={DEFAULT_HOLDERS}): run the test body repeatedly under "
        "leakscope and fail the test if memory kept per iteration keeps growing above "
        "max_growth",
    )


class LeakscopeUsageError(Exception):
    """A marker or fixture argument leakscope cannot use; the test fails with it."""


def _settings(iterations: Any = None, warmup: Any = None, frames: Any = None,
              holders: Any = None) -> Settings:
    """The marker's or fixture's options, checked by the rule the CLI and config share."""
    from leakscope.model.settings import Settings

    settings = Settings(holders=DEFAULT_HOLDERS)
    given = {"iterations": iterations, "warmup": warmup, "frames": frames}
    for name, value in given.items():
        if value is not None:
            setattr(settings, name, _checked(name, value))
    if holders is not None:
        settings.holders = bool(holders)
    return settings


def _checked(name: str, value: Any) -> Any:
    from leakscope.model.settings import SettingError, check_setting

    try:
        return check_setting(name, value)
    except SettingError as exc:
        raise LeakscopeUsageError(f"{name}={value!r}: {exc.expected}") from None


def _budget(max_growth: Any) -> int:
    from leakscope.analysis.budget import DEFAULT_MAX_GROWTH

    return int(_checked("max_growth", DEFAULT_MAX_GROWTH if max_growth is None else max_growth))


def _judge(run: Run, max_growth_bytes: int) -> None:
    """Fail the current test with the CI line and the short summary if the run is over budget."""
    from leakscope.analysis.budget import exceeds
    from leakscope.render.text import ci_line, short_summary

    assert run.verdict is not None
    if exceeds(run.verdict, max_growth_bytes):
        pytest.fail(
            f"{ci_line(run, max_growth_bytes, True)}\n{short_summary(run)}", pytrace=False
        )


def _usage_failure(exc: LeakscopeUsageError) -> BaseException:
    """The test's failure for a usage problem: one line, no traceback, no chained context."""
    return pytest.fail.Exception(f"leakscope: {exc}", pytrace=False)


def _refuse_nesting() -> None:
    # One collector per process: tracemalloc and the tick hook are process-wide.
    if hook.installed() is not None:
        raise LeakscopeUsageError("leakscope is already tracing in this process")


class PytestBuffers:
    """Trims what pytest itself keeps from every call of a body, so it is not the test's leak.

    pytest records each log record of the call phase (for the "Captured log
    call" section and ``caplog``) and each warning (``-W always`` for
    deprecations): repeat a body that logs or warns and those lists grow by
    one entry a loop. After each iteration the log capture is cleared (the
    report keeps the last iteration's records) and warnings are kept once
    per distinct warning, then re-issued to pytest when the loop ends.
    """

    def __init__(self) -> None:
        self._handlers: list[Any] = []
        self._catcher: warnings.catch_warnings[Any] | None = None
        self._caught: list[warnings.WarningMessage] = []
        self._kept: dict[tuple[Any, ...], warnings.WarningMessage] = {}

    def __enter__(self) -> PytestBuffers:
        capturing: tuple[type, ...] = ()
        try:
            from _pytest.logging import LogCaptureHandler

            capturing = (LogCaptureHandler,)
        except ImportError:  # pragma: no cover - a pytest without its logging plugin
            pass
        self._handlers = [
            h for h in logging.getLogger().handlers if isinstance(h, capturing)
        ]
        self._catcher = warnings.catch_warnings(record=True)
        self._caught = self._catcher.__enter__()
        return self

    def trim(self) -> None:
        """Called after each iteration, before the collector measures it."""
        for handler in self._handlers:
            if hasattr(handler, "clear"):
                handler.clear()
            else:  # pragma: no cover - pytest < 8
                handler.reset()
        for message in self._caught:
            key = (message.category, str(message.message), message.filename, message.lineno)
            if key not in self._kept and len(self._kept) < KEPT_WARNINGS:
                self._kept[key] = message
        self._caught.clear()

    def __exit__(self, *exc: object) -> None:
        self.trim()
        assert self._catcher is not None
        self._catcher.__exit__(None, None, None)
        for message in self._kept.values():
            warnings.warn_explicit(
                message.message, message.category, message.filename, message.lineno,
                source=message.source,
            )


class _TrimmingSink:
    """Sits between ``tick()`` and the collector, trimming pytest's buffers each loop."""

    def __init__(self, collector: Any, buffers: PytestBuffers) -> None:
        self.collector = collector
        self.buffers = buffers

    def end_loop(self) -> bool:
        self.buffers.trim()
        return bool(self.collector.end_loop())


# ------------------------------------------------------------------ the marker


def _marker_options(item: pytest.Function) -> dict[str, Any]:
    marker = item.get_closest_marker(MARKER)
    assert marker is not None
    if marker.args:
        raise LeakscopeUsageError(
            f"@pytest.mark.{MARKER} takes keyword arguments only ({', '.join(OPTIONS)})"
        )
    unknown = sorted(set(marker.kwargs) - set(OPTIONS))
    if unknown:
        raise LeakscopeUsageError(
            f"@pytest.mark.{MARKER}: unknown option {unknown[0]!r} (known: {', '.join(OPTIONS)})"
        )
    if FIXTURE in item.fixturenames:
        raise LeakscopeUsageError(
            f"use either @pytest.mark.{MARKER} or the {FIXTURE!r} fixture in one test, "
            "not both: the marker already repeats the whole body"
        )
    return dict(marker.kwargs)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """Swap the test function for one that repeats it under tracing, for marked tests only.

    pytest calls ``pyfuncitem.obj`` with the fixture values it resolved, so
    wrapping ``obj`` (as pytest-memray does) keeps fixtures, parametrize and
    other plugins' hooks working. Fixtures are set up once; the body repeats.
    """
    if pyfuncitem.get_closest_marker(MARKER) is None:
        return (yield)
    original = pyfuncitem.obj
    pyfuncitem.obj = _repeating(pyfuncitem, original)
    try:
        return (yield)
    finally:
        pyfuncitem.obj = original


def _repeating(item: pytest.Function, func: Callable[..., object]) -> Callable[..., None]:
    @functools.wraps(func)
    def repeat(*args: Any, **kwargs: Any) -> None:
        from leakscope.drive.inprocess import trace_callable

        try:
            options = _marker_options(item)
            settings = _settings(
                options.get("iterations"), options.get("warmup"), options.get("frames"),
                options.get("holders"),
            )
            budget = _budget(options.get("max_growth"))
            _refuse_nesting()
        except LeakscopeUsageError as exc:
            raise _usage_failure(exc) from None

        buffers = PytestBuffers()

        def body() -> None:
            result = func(*args, **kwargs)
            buffers.trim()
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it rather than warn
                raise LeakscopeUsageError(
                    f"@pytest.mark.{MARKER} repeats a plain function and this test returned an "
                    f"awaitable; from a plain test, use the {FIXTURE!r} fixture: "
                    f"{FIXTURE}.trace(lambda: asyncio.run(body()))"
                )

        try:
            with buffers:
                run = trace_callable(body, settings, target=item.nodeid)
        except LeakscopeUsageError as exc:
            raise _usage_failure(exc) from None
        item.stash[RUN_KEY] = run
        _judge(run, budget)

    return repeat


# ----------------------------------------------------------------- the fixture


class LoopTrace:
    """A traced loop that the test drives itself; ``with`` it, call ``tick()`` per iteration.

    ``tick()`` is ``leakscope.tick()``: code under test that already calls
    it is traced as it is. After warm-up plus ``iterations`` ticks it raises
    ``StopTracing``, which ends the ``with`` block quietly, so ``while True``
    loops need no counter. On leaving the block the run is analysed and the
    test fails if it leaks above ``max_growth`` (unless ``check=False``);
    ``run`` holds the analysed Run either way.
    """

    def __init__(self, settings: Settings, max_growth_bytes: int, check: bool,
                 target: str, owner: LeakscopeFixture) -> None:
        self.settings = settings
        self.max_growth_bytes = max_growth_bytes
        self.check = check
        self.target = target
        self.owner = owner
        self.run: Run | None = None
        self._traced: InProcessTrace | None = None
        self._buffers: PytestBuffers | None = None

    def __enter__(self) -> LoopTrace:
        from leakscope.drive.inprocess import InProcessTrace

        try:
            _refuse_nesting()
        except LeakscopeUsageError as exc:
            raise _usage_failure(exc) from None
        self._buffers = PytestBuffers().__enter__()
        self._traced = InProcessTrace(self.settings, self.target)
        self._traced.begin()
        # Ticks reach the collector through the trimming sink, whoever calls them.
        hook.install(_TrimmingSink(self._traced.collector, self._buffers))
        self.owner._open.append(self)
        return self

    @staticmethod
    def tick() -> None:
        """End one iteration (the same as ``leakscope.tick()``)."""
        hook.tick()

    def close(self) -> Run | None:
        """Switch tracing off and analyse; safe to call twice."""
        if self._traced is not None and self.run is None:
            self.run = self._traced.finish()
            assert self._buffers is not None
            self._buffers.__exit__(None, None, None)
        if self in self.owner._open:
            self.owner._open.remove(self)
        return self.run

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        assert self._traced is not None
        stopped = exc_type is not None and issubclass(exc_type, StopTracing)
        done = self._traced.loops_done
        run = self.close()
        if exc_type is not None and not stopped:
            return False  # the test's own error, unchanged; tracing is already off
        wanted = self._traced.loops_wanted
        if not stopped and wanted is not None and done < wanted:
            pytest.fail(
                f"leakscope: the loop ended after {done} tick(s); it needs warm-up "
                f"({self.settings.warmup}) + iterations ({self.settings.iterations}) = {wanted}",
                pytrace=False,
            )
        if self.check and run is not None:
            try:
                _judge(run, self.max_growth_bytes)
            except pytest.fail.Exception as failure:
                # Raised while the StopTracing that ended the loop is handled:
                # without `from None` pytest prints "During handling of the
                # above exception" over an empty section.
                raise failure from None
        return stopped


class LeakscopeFixture:
    """What the ``leakscope`` fixture gives a test: trace a callable, or the test's own loop.

    ``trace(func, ...)`` calls ``func`` once per iteration, like a worker's
    ``iteration()``; ``loop(...)`` is a context manager for a loop the test
    writes itself. Both take ``iterations``, ``warmup``, ``max_growth``,
    ``frames`` and ``holders`` as the marker does, fail the test when the
    run leaks above ``max_growth`` (pass ``check=False`` to only measure),
    and give back the analysed Run.
    """

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.runs: list[Run] = []
        self._open: list[LoopTrace] = []

    def trace(self, func: Callable[[], object], *, iterations: int | None = None,
              warmup: int | str | None = None, max_growth: str | int | None = None,
              frames: int | None = None, holders: bool | None = None,
              check: bool = True) -> Run:
        """Call ``func`` for warm-up plus ``iterations`` loops; fail the test if it leaks."""
        from leakscope.drive.inprocess import trace_callable

        try:
            settings = _settings(iterations, warmup, frames, holders)
            budget = _budget(max_growth)
            _refuse_nesting()
        except LeakscopeUsageError as exc:
            raise _usage_failure(exc) from None
        buffers = PytestBuffers()

        def body() -> None:
            func()
            buffers.trim()

        with buffers:
            run = trace_callable(body, settings, target=f"{self.nodeid}::{_name(func)}")
        self.runs.append(run)
        if check:
            _judge(run, budget)
        return run

    def loop(self, *, iterations: int | None = None, warmup: int | str | None = None,
             max_growth: str | int | None = None, frames: int | None = None,
             holders: bool | None = None, check: bool = True) -> LoopTrace:
        """A context manager for the test's own loop; call ``tick()`` once per iteration."""
        try:
            settings = _settings(iterations, warmup, frames, holders)
            budget = _budget(max_growth)
        except LeakscopeUsageError as exc:
            raise _usage_failure(exc) from None
        traced = LoopTrace(settings, budget, check, self.nodeid, self)
        return traced

    @staticmethod
    def tick() -> None:
        """End one iteration of a ``loop()`` (the same as ``leakscope.tick()``)."""
        hook.tick()

    def _close_all(self) -> None:
        for traced in list(self._open):
            traced.close()


def _name(func: Callable[..., object]) -> str:
    """``<lambda>`` or ``Consumer.handle``: the test's node id already says where it is."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return str(name).rsplit(".<locals>.", 1)[-1]


@pytest.fixture(name=FIXTURE)
def leakscope_fixture(request: pytest.FixtureRequest) -> Generator[LeakscopeFixture, None, None]:
    """Trace a callable (``leakscope.trace(func)``) or the test's own loop (``.loop()``)."""
    handle = LeakscopeFixture(request.node.nodeid)
    try:
        yield handle
    finally:
        # A loop left open (a test that entered it by hand) must not leave
        # tracemalloc running or the hook installed for the next test.
        handle._close_all()
