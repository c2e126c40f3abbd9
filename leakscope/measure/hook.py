"""The switch a worker's own loop calls: ``tick()`` and ``StopTracing``.

Outside a leakscope run ``tick()`` reads one module global and returns, so it
can stay in production code. Inside a run the collector installs itself here
and every tick ends one measured loop.
"""

from __future__ import annotations

from typing import Protocol


class StopTracing(BaseException):
    """Raised by ``tick()`` when leakscope has gathered enough loops.

    A ``BaseException`` so that a worker's ``except Exception`` around its
    loop body does not swallow it.
    """


class LoopSink(Protocol):
    def end_loop(self) -> bool:
        """Record the loop that just ended; False when no more are wanted."""


_sink: LoopSink | None = None
# Threads the process had before the code under test started (a test
# runner's own: pytest-xdist's channel). The pytest plugin fills it; the
# collector does not count them among the worker's other threads.
threads_before: frozenset[int] = frozenset()


def tick() -> None:
    """Mark the end of one iteration of the worker's loop."""
    sink = _sink
    if sink is None:
        return
    if not sink.end_loop():
        raise StopTracing


def install(sink: LoopSink | None) -> None:
    """Route ticks to ``sink`` (None switches the hook off)."""
    global _sink
    _sink = sink


def installed() -> LoopSink | None:
    return _sink
