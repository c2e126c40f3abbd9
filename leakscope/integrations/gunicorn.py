"""gunicorn: one unit per request in each worker process; the master is named, not traced.

The worker's WSGI app is wrapped once it is loaded (``Worker.load_wsgi``),
so every worker class that serves WSGI (sync, gthread, gevent, eventlet)
ends a unit when it closes a response.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from leakscope.integrations.wsgi import TickingApp


def on_import(agent: Any, name: str, module: types.ModuleType) -> None:
    if name == "gunicorn.arbiter":
        _hook_master(agent, module.Arbiter)
    else:
        _hook_worker(agent, module.Worker)


def _hook_master(agent: Any, arbiter: Any) -> None:
    run = arbiter.run

    @functools.wraps(run)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        cfg = getattr(self, "cfg", None)
        agent.describe(
            "gunicorn master", unit="request", framework="gunicorn",
            workers=getattr(self, "num_workers", None),
            max_requests=getattr(cfg, "max_requests", None) or None,
        )
        return run(self, *args, **kwargs)

    arbiter.run = wrapper


def _hook_worker(agent: Any, worker: Any) -> None:
    load_wsgi = worker.load_wsgi

    @functools.wraps(load_wsgi)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = load_wsgi(self, *args, **kwargs)
        self.wsgi = TickingApp(self.wsgi, agent.unit_done)
        agent.describe(
            "gunicorn worker", unit="request", framework="gunicorn",
            worker_class=type(self).__name__,
            max_requests=getattr(self, "max_requests", None) or None,
        )
        return result

    worker.load_wsgi = wrapper
