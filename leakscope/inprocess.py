"""Trace a callable in this very process: the engine behind the pytest plugin.

The CLI runs workers in a child process; a test body has to run where pytest
runs it, with its fixtures. The same Collector does the measuring and the
same RunBuilder turns loops into a Run, so the verdict rule is identical.
Allocations made by leakscope itself (the Run being built here) are left out
of every figure by the collector's own-allocation filter.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from typing import Any

import leakscope
from leakscope.analysis import analyse
from leakscope.collector import Collector
from leakscope.hook import StopTracing
from leakscope.runfile import Run
from leakscope.settings import Settings
from leakscope.supervisor import RunBuilder, _finish, now_iso


class _BuilderObserver:
    def __init__(self, builder: RunBuilder) -> None:
        self.builder = builder

    def on_measuring(self, warmup_loops: int) -> None:
        self.builder.run.settings["warmup_used"] = warmup_loops

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        self.builder.add_loop(loop, [list(c) for c in changes])

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        self.builder.add_checkpoint(loops_done, observation)


def trace_callable(
    func: Callable[[], object], settings: Settings, target: str = "<callable>"
) -> Run:
    """Call ``func`` for warm-up plus measured loops and return the analysed Run.

    Exceptions from ``func`` propagate unchanged after tracing is switched off.
    """
    run = Run(
        target=target, python=platform.python_version(), started_at=now_iso(),
        settings=settings.to_dict(), leakscope_version=leakscope.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )
    run.settings.pop("args", None)
    builder = RunBuilder(run, settings.top, os.getcwd())
    probe = None
    if settings.holders:
        from leakscope.holders import HolderProbe

        probe = HolderProbe()
    collector = Collector(settings, _BuilderObserver(builder), probe)
    collector.begin()
    try:
        while True:
            func()
            if not collector.end_loop():
                break
    except StopTracing:
        pass
    finally:
        builder.final = collector.finish()
    run.observations["cwd"] = os.getcwd()
    _finish(run, builder)
    return analyse(run)
