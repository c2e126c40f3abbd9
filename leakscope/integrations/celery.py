"""Celery: one unit per task, ended by ``task_postrun`` in the process that ran it.

Under the prefork pool that is a pool child (the main process only hands out
tasks and is never traced); under solo or threads, the main process. The
pool child's run is saved by ``worker_process_shutdown``, which billiard
sends before it ends the child with ``os._exit`` (at shutdown and after
``--max-tasks-per-child``).
"""

from __future__ import annotations

import os
import types
from typing import Any


def on_import(agent: Any, name: str, module: types.ModuleType) -> None:
    from celery import signals

    main_pid: list[int] = []

    def task_done(**_: Any) -> None:
        agent.unit_done()

    def worker_started(sender: Any = None, **_: Any) -> None:
        main_pid.append(os.getpid())
        pool = _pool_name(getattr(sender, "pool_cls", None))
        role = "celery main process" if pool == "prefork" else f"celery worker ({pool} pool)"
        max_memory = getattr(sender, "max_memory_per_child", None)
        agent.describe(
            role, unit="task", framework="celery", pool=pool,
            concurrency=getattr(sender, "concurrency", None),
            max_tasks_per_child=getattr(sender, "max_tasks_per_child", None),
            # Celery's setting is in KiB of resident memory.
            max_memory_per_child_bytes=max_memory * 1024 if max_memory else None,
        )

    def pool_child_started(**_: Any) -> None:
        if os.getpid() in main_pid:
            return  # solo and threads pools send it in the main process too
        agent.describe("celery pool child", unit="task", framework="celery")

    def pool_child_ending(**_: Any) -> None:
        agent.finalize("celery pool child shutdown")

    signals.task_postrun.connect(task_done, weak=False)
    signals.worker_init.connect(worker_started, weak=False)
    signals.worker_process_init.connect(pool_child_started, weak=False)
    signals.worker_process_shutdown.connect(pool_child_ending, weak=False)


def _pool_name(pool_cls: Any) -> str:
    """``celery.concurrency.prefork:TaskPool`` (class or string) -> ``prefork``."""
    if pool_cls is None:
        return "prefork"
    text = pool_cls if isinstance(pool_cls, str) else getattr(pool_cls, "__module__", "")
    return text.split(":")[0].rsplit(".", 1)[-1] or "prefork"
