"""Finds the unit of work in each framework, once and only if that framework is imported.

Each integration is a module here with ``on_import(agent, module)``. The
agent installs a finder at the front of ``sys.meta_path`` that waits for the
framework's module to be imported by the worker itself, lets it load as
usual, then calls the integration (the post-import hook wrapt and
OpenTelemetry's auto-instrumentation use). A framework that is never
imported costs one dictionary lookup per import; leakscope imports none.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from collections.abc import Callable
from typing import Any

# module name -> integration module under leakscope.integrations
WATCHED = {
    "celery": "celery",
    "rq": "rq",
    "gunicorn.arbiter": "gunicorn",
    "gunicorn.workers.base": "gunicorn",
    "uvicorn.config": "asgi",
    "dramatiq": "dramatiq",
}


def install(agent: Any) -> None:
    """Hook every watched module: now if already imported, else when it is."""
    finder = _PostImportFinder(agent)
    for name in WATCHED:
        module = sys.modules.get(name)
        if module is not None:
            finder.run_hook(name, module)
    sys.meta_path.insert(0, finder)


class _HookedLoader(importlib.abc.Loader):
    """The module's own loader, then the integration; the module never sees us."""

    def __init__(self, loader: Any, after: Callable[[types.ModuleType], None]) -> None:
        self.loader = loader
        self.after = after

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        # Put the real loader back first, so the module's own code (and
        # anything that inspects __loader__ later) sees only its loader.
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.after(module)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self, agent: Any) -> None:
        self.agent = agent
        self.busy: set[str] = set()
        self.done: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in WATCHED or name in self.busy or name in self.done:
            return None
        self.busy.add(name)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    break
        finally:
            self.busy.discard(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _HookedLoader(spec.loader, lambda module: self.run_hook(name, module))
        return spec

    def run_hook(self, name: str, module: types.ModuleType) -> None:
        if name in self.done:
            return
        self.done.add(name)
        try:
            integration = importlib.import_module(f"leakscope.integrations.{WATCHED[name]}")
            integration.on_import(self.agent, name, module)
        except Exception as exc:  # noqa: BLE001 - a broken integration must not stop the worker
            sys.stderr.write(
                f"leakscope: could not hook {name}: {type(exc).__name__}: {exc}\n"
            )
