"""RQ: one unit per job, ended when the worker's ``execute_job`` returns.

``SimpleWorker`` runs the job in the worker process, so the job's growth is
the worker's. The default ``Worker`` forks a work horse per job: what the
job keeps dies with the horse, so leakscope measures the worker process
itself per job (its own bookkeeping, connection, logging) and leaves the
horses alone.
"""

from __future__ import annotations

import functools
import types
from typing import Any


def on_import(agent: Any, name: str, module: types.ModuleType) -> None:
    import rq.worker as workers

    # Any: the worker classes get their methods replaced, which a type checker forbids.
    base: Any = getattr(workers, "BaseWorker", None) or workers.Worker
    for cls in _with_subclasses(base):
        if "execute_job" in cls.__dict__:
            cls.execute_job = _ticking(cls.__dict__["execute_job"], agent)
    if "main_work_horse" in base.__dict__:
        base.main_work_horse = _disarming(base.__dict__["main_work_horse"], agent)


def _with_subclasses(cls: type) -> list[Any]:
    found: list[Any] = []
    todo = [cls]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(type.__subclasses__(current))
    return found


def _ticking(execute_job: Any, agent: Any) -> Any:
    # The worker's class is known at its first job only. Under `attach` the
    # framework is named before that, so the role waits for this flag.
    described = False

    @functools.wraps(execute_job)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal described
        if not described:
            described = True
            forks = not hasattr(type(self), "main_work_horse") or _forks(self)
            role = "rq worker" if forks else "rq simple worker"
            agent.describe(role, unit="job", framework="rq", forks_per_unit=forks,
                           worker_class=type(self).__name__)
        try:
            return execute_job(self, *args, **kwargs)
        finally:
            agent.unit_done()

    return wrapper


def _forks(worker: Any) -> bool:
    """Whether this worker class runs each job in a work horse (not in itself)."""
    import rq.worker as workers

    simple = getattr(workers, "SimpleWorker", None)
    return simple is None or not isinstance(worker, simple)


def _disarming(main_work_horse: Any, agent: Any) -> Any:
    @functools.wraps(main_work_horse)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        agent.disarm("rq work horse")
        return main_work_horse(self, *args, **kwargs)

    return wrapper
