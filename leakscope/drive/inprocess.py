"""Trace a callable in this very process: the engine behind the pytest plugin.

The CLI runs workers in a child process; a test body has to run where pytest
runs it, with its fixtures. The same Collector does the measuring and sends
the same messages (``wire.MessageObserver``), straight to the same
``Assembler`` that builds every Run, so the verdict rule is identical.
Allocations made by leakscope itself (the Run being built here) are left out
of every figure by the collector's own-allocation filter.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from leakscope.analysis import analyse
from leakscope.drive.assemble import Assembler
from leakscope.measure.collector import Collector
from leakscope.measure.hook import StopTracing
from leakscope.model import wire
from leakscope.model.runfile import Run, new_run, now_iso
from leakscope.model.settings import Settings


class InProcessTrace:
    """One traced run in this process, driven by ``end_loop()`` or ``leakscope.tick()``.

    ``trace_callable`` drives it with a callable; the pytest fixture's
    ``loop()`` lets a test drive it from its own loop. Both end in
    ``finish()``, which switches tracing off and the hook out before anything
    else can fail, so a test never leaves tracemalloc running.
    """

    def __init__(self, settings: Settings, target: str = "<callable>") -> None:
        self.settings = settings
        self.run = new_run(target, settings.to_dict())
        self.run.settings.pop("args", None)
        self.assembler = Assembler(self.run, settings.top, os.getcwd())
        probe = None
        if settings.holders:
            from leakscope.heap.probe import HolderProbe

            probe = HolderProbe()
        self.collector = Collector(settings, wire.MessageObserver(self.assembler.feed), probe)
        self.finished = False

    @property
    def loops_done(self) -> int:
        """Loops ended so far, warm-up included."""
        return self.collector.index

    @property
    def loops_wanted(self) -> int | None:
        """Warm-up plus measured loops, when the warm-up is a fixed count."""
        warmup = self.settings.warmup
        return None if warmup == "auto" else int(warmup) + self.settings.iterations

    def begin(self) -> None:
        """Install the tick hook; tracing starts after the warm-up loops."""
        self.collector.begin()

    def end_loop(self) -> bool:
        """Record the loop that just ended; False once enough loops are measured."""
        return self.collector.end_loop()

    def finish(self) -> Run:
        """Switch tracing off, then build and analyse the Run."""
        if not self.finished:
            self.finished = True
            final = self.collector.finish()
            self.run.finished_at = now_iso()
            self.run.observations["cwd"] = os.getcwd()
            self.run.observations["in_process"] = True
            self.assembler.finish(final)
            if not exact_malloc_counter():
                _drop_inexact_native(self.run)
            analyse(self.run)
        return self.run


def exact_malloc_counter() -> bool:
    """Whether glibc's malloc counter is exact in this process (its tcache is off).

    The CLI's traced child always starts with the tcache off; a process we
    run inside (pytest) started as it was, and glibc reads the setting only
    at start-up. With the tcache on, chunks parked in it count as in use and
    a loop that only churns looks like a native leak of a few hundred bytes.
    """
    return "glibc.malloc.tcache_count=0" in os.environ.get("GLIBC_TUNABLES", "")


def _drop_inexact_native(run: Run) -> None:
    """Leave the malloc counter out of the verdict where it cannot be trusted.

    The verdict then reads native growth from RSS, which moves in pages and
    needs a page's worth per loop to count, as on platforms without glibc.
    """
    for loop in run.loops:
        loop.native_bytes = None
    run.observations["native_counter"] = (
        "rss: glibc's tcache is on in this process; start it with "
        "GLIBC_TUNABLES=glibc.malloc.tcache_count=0 for the exact malloc counter"
    )


def trace_callable(
    func: Callable[[], object], settings: Settings, target: str = "<callable>"
) -> Run:
    """Call ``func`` for warm-up plus measured loops and return the analysed Run.

    Exceptions from ``func`` propagate unchanged after tracing is switched off.
    """
    traced = InProcessTrace(settings, target)
    traced.begin()
    try:
        while True:
            func()
            if not traced.end_loop():
                break
    except StopTracing:
        pass
    except BaseException:
        # Tracing off and the hook out, then the test's own error, unchanged.
        traced.collector.finish()
        traced.finished = True
        raise
    return traced.finish()
