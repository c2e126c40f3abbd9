"""Dramatiq: one unit per message, ended by ``after_process_message`` in the worker process.

leakscope adds its middleware to the broker when a worker process builds
its ``Worker``, so the user's broker setup is untouched; skipped messages
(``after_skip_message``) end a unit too.
"""

from __future__ import annotations

import functools
import types
from typing import Any


def on_import(agent: Any, name: str, module: types.ModuleType) -> None:
    import dramatiq.worker
    from dramatiq.middleware import Middleware

    class LeakscopeUnits(Middleware):
        """Ticks leakscope after every message this worker process handles."""

        def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                                  exception: Any = None) -> None:
            agent.unit_done()

        def after_skip_message(self, broker: Any, message: Any) -> None:
            agent.unit_done()

    worker_class: Any = dramatiq.worker.Worker  # Any: its __init__ gets replaced
    init = worker_class.__init__

    @functools.wraps(init)
    def wrapper(self: Any, broker: Any, *args: Any, **kwargs: Any) -> None:
        if not any(isinstance(m, LeakscopeUnits) for m in broker.middleware):
            broker.add_middleware(LeakscopeUnits())
        agent.describe("dramatiq worker", unit="message", framework="dramatiq",
                       threads=kwargs.get("worker_threads"))
        init(self, broker, *args, **kwargs)

    worker_class.__init__ = wrapper
