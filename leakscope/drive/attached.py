"""`leakscope attach`'s side inside the target: count its units, write its events, then leave.

Started by the bootstrap ``leakscope.drive.attach`` injects; standard library and
leakscope's in-process modules only. It writes the events file of an armed
``leakscope run`` process (``agent.Agent``) but arms nothing that cannot be
taken back: no signal handler, no at-fork handler, no import hook, no
``os._exit`` wrapper, no environment change. The units come from the
framework already running (a gunicorn worker's WSGI app is wrapped in place,
Celery's ``task_postrun`` and RQ's job end are connected); without one, a
thread ends one *time slice* per ``time_slice`` seconds (said in the run).

That thread first imports every module of leakscope's that the span will
use, and units count only from then on: tracemalloc starts with all of
leakscope loaded, so the RSS recorded just before it (the run's
``rss_before_tracing_bytes``) is the size the process must come back to.

The same thread watches the run: once leakscope removes its marker (the
span is over, or Ctrl-C) or leakscope itself is gone, it has the end (the
last holder walk and the descriptions) written by a forked copy of the
process, so that the walk's objects never grow the worker's own heap, then
restores every hook, stops tracemalloc, drops leakscope's modules from
``sys.modules`` and the private path from ``sys.path``. A process that exits
during the span writes its end at exit (``atexit``); one killed loses only
that end, and its units are read anyway.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import json
import os
import sys
import threading
import time
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

from leakscope.drive import agent as agentmod
from leakscope.drive.agent import Agent
from leakscope.measure import hook

WATCH_SECONDS = 0.05
# What the span imports lazily, loaded by the watcher before the first unit
# counts: an import while tracing would stay in the process (its standard
# library modules are never dropped) and be counted as tracing's memory.
UP_FRONT = ("leakscope.measure.worker_collector", "leakscope.heap.probe", "leakscope.heap.backrefs",
            "leakscope.heap.fork", "leakscope.analysis.rules", "leakscope.analysis.stats",
            "resource", "weakref")
# How long the forked copy that writes the end may take (the tool side waits
# attach.FINAL_TIMEOUT for it); a copy stuck on a lock another thread held at
# fork is killed, and the run lacks its end (the units are read anyway).
FINAL_COPY_WAIT = 45.0

_attached: AttachedAgent | None = None


def start(config_path: str, private: str, aside: dict[str, types.ModuleType],
          cached: dict[str, set[Any]] | None = None) -> None:
    """Arm this process for one attach, and return at once (the bootstrap's only call).

    ``cached`` holds the keys of the ``re`` module's caches before leakscope was
    imported, so that leaving takes out the patterns leakscope compiled.
    """
    global _attached
    with open(config_path) as stream:
        config = json.load(stream)
    _attached = AttachedAgent(config, private, aside, cached or {})
    _attached.arm()


class AttachedAgent(Agent):
    """An armed process of ``leakscope run`` that was not started by it, and leaves after."""

    def __init__(self, config: dict[str, Any], private: str,
                 aside: dict[str, types.ModuleType], cached: dict[str, set[Any]]) -> None:
        super().__init__(config)
        self.private = private
        self.aside = aside
        self.cached = cached
        self.time_slice = float(config.get("time_slice") or 0.25)
        self.undo: list[Callable[[], None]] = []
        self.left = threading.Event()
        self.ready = threading.Event()  # leakscope's modules all loaded: units count

    def arm(self) -> None:
        agentmod.note_inherited_peak()
        self._open()
        hook.install(self)
        atexit.register(self._at_exit)
        self._hook_frameworks()
        if self.framework is None:
            self.describe(unit="time slice", time_slice_seconds=self.time_slice, attached=True)
        else:
            self.describe(attached=True)
        threading.Thread(target=self._watch, name="leakscope-attach", daemon=True).start()

    # ------------------------------------------------------- frameworks

    def _hook_frameworks(self) -> None:
        """The running framework's unit of work, hooked in place (each undone on leaving)."""
        self._hook_own_tick()
        for name, hook_one in (("gunicorn.workers.base", self._hook_gunicorn),
                               ("celery", self._hook_celery), ("rq.worker", self._hook_rq),
                               ("dramatiq.worker", self._hook_dramatiq)):
            module = sys.modules.get(name)
            if module is None:
                continue
            try:
                hook_one(module)
            except Exception as exc:  # noqa: BLE001 - fall back to time slices
                self.send({"t": "agent-error", "message": f"{name}: {exc}"})

    def _hook_own_tick(self) -> None:
        """A worker that calls ``leakscope.tick()`` from its own leakscope: each tick a unit.

        Its copy stays its own (set aside by the bootstrap, put back on leaving);
        only its hook's sink points here for the span.
        """
        their_hook = self.aside.get("leakscope.measure.hook")
        install = getattr(their_hook, "install", None)
        installed = getattr(their_hook, "installed", None)
        if install is None or installed is None or installed() is not None:
            return
        install(self)
        self.undo.append(lambda: install(None))
        self.describe(unit="loop", framework="leakscope.tick")

    def _hook_gunicorn(self, module: types.ModuleType) -> None:
        from leakscope.integrations.wsgi import TickingApp

        worker_class = module.Worker
        # type(obj).__mro__, never isinstance(): no user __class__ property runs.
        workers = [obj for obj in gc.get_objects()
                   if worker_class in type(obj).__mro__ and "wsgi" in vars(obj)]
        for worker in workers:
            original = vars(worker)["wsgi"]
            if original is None:
                continue
            wrapped = TickingApp(original, self.unit_done)
            vars(worker)["wsgi"] = wrapped

            def undo(worker: Any = worker, original: Any = original,
                     wrapped: Any = wrapped) -> None:
                if vars(worker).get("wsgi") is wrapped:
                    vars(worker)["wsgi"] = original

            self.undo.append(undo)
            self.describe("gunicorn worker", unit="request", framework="gunicorn",
                          worker_class=type(worker).__name__,
                          max_requests=getattr(worker, "max_requests", None) or None)

    def _hook_celery(self, module: types.ModuleType) -> None:
        signals = sys.modules.get("celery.signals")
        if signals is None:
            return

        def task_done(**_: Any) -> None:
            self.unit_done()

        signals.task_postrun.connect(task_done, weak=False)
        self.undo.append(lambda: signals.task_postrun.disconnect(task_done))
        self.describe("celery pool child" if _parent_runs("celery") else "celery worker",
                      unit="task", framework="celery")

    def _hook_rq(self, module: types.ModuleType) -> None:
        """``execute_job`` of every worker class, as the run integration wraps it."""
        from leakscope.integrations import rq

        base = getattr(module, "BaseWorker", None) or module.Worker
        for cls in rq._with_subclasses(base):
            original = cls.__dict__.get("execute_job")
            if original is None:
                continue
            wrapped = rq._ticking(original, self)
            cls.execute_job = wrapped

            def undo(cls: Any = cls, original: Any = original, wrapped: Any = wrapped) -> None:
                if cls.__dict__.get("execute_job") is wrapped:
                    cls.execute_job = original

            self.undo.append(undo)
        self.describe(unit="job", framework="rq")

    def _hook_dramatiq(self, module: types.ModuleType) -> None:
        """A middleware on the broker the worker threads read per message; taken off after."""
        import dramatiq
        from dramatiq.middleware import Middleware

        done = self.unit_done

        class LeakscopeUnits(Middleware):
            def after_process_message(self, broker: Any, message: Any, *, result: Any = None,
                                      exception: Any = None) -> None:
                done()

            def after_skip_message(self, broker: Any, message: Any) -> None:
                done()

        broker = dramatiq.get_broker()
        middleware = LeakscopeUnits()
        # A new list, never the one a worker thread may be iterating over.
        broker.middleware = [*broker.middleware, middleware]

        def undo() -> None:
            broker.middleware = [m for m in broker.middleware if m is not middleware]

        self.undo.append(undo)
        self.describe("dramatiq worker", unit="message", framework="dramatiq")

    # ------------------------------------------------------------ units

    def _measuring_units(self) -> bool:
        return self.ready.is_set() and not self.left.is_set() and \
            os.path.exists(self._running_path)

    def run_over(self) -> bool:
        """Never strips the environment (attach changed none); leaving is the watcher's job."""
        return self.left.is_set() or not agentmod.run_is_on(self.config)

    def _watch(self) -> None:
        """Time slices (without a framework) and the end of the span, in one thread."""
        try:
            for name in UP_FRONT:
                importlib.import_module(name)
            # What the imports freed (compiling a module from source leaves
            # megabytes) goes back before the RSS the run compares against.
            _trim()
            self.ready.set()
            next_slice = time.monotonic() + self.time_slice
            checked = 0.0
            while True:
                time.sleep(WATCH_SECONDS)
                now = time.monotonic()
                if not os.path.exists(self._running_path):
                    self.leave("span over", save=True)
                    return
                if now - checked >= agentmod.RUN_CHECK_SECONDS:
                    checked = now
                    if not agentmod.run_is_on(self.config):
                        self.leave("leakscope gone", save=False)
                        return
                if self.framework is None and now >= next_slice:
                    next_slice = now + self.time_slice
                    self.unit_done()
        except BaseException:  # noqa: BLE001 - whatever happens, the process is left clean
            self.leave("watcher failed", save=False)

    def _at_exit(self) -> None:
        """The worker exits during the span: what was gathered is written (the run is partial)."""
        self.finalize("exit")

    # ---------------------------------------------------------- leaving

    def leave(self, reason: str, save: bool) -> None:
        """Write the end (when asked), then take back everything attach put in the process."""
        copy = None
        with self._lock:
            if save and not self.finalized and not self.disarmed:
                try:
                    copy = self._finalize_in_copy(reason)
                except Exception:  # noqa: BLE001, S110 - leaving anyway
                    pass
            self.left.set()
            self.disarmed = True
            recorder, self.recorder = self.recorder, None
            if recorder is not None:
                try:
                    recorder.abandon()
                except Exception:  # noqa: BLE001, S110 - leaving anyway
                    pass
        for undo in reversed(self.undo):
            try:
                undo()
            except Exception:  # noqa: BLE001, S110 - the others still go
                pass
        self.undo = []
        hook.install(None)
        atexit.unregister(self._at_exit)
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        if copy is not None:
            _reap(copy, FINAL_COPY_WAIT)
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        _forget(self.private, self.aside, self.cached)

    def _finalize_in_copy(self, reason: str) -> int | None:
        """The end written by a forked copy, frozen now with tracemalloc's record; its pid.

        The final walk and the descriptions make a Python object per container
        of the heap: in the worker, pymalloc takes new arenas for them, and
        the requests served meanwhile leave objects in those arenas that pin
        them after leakscope is gone (2 MiB of a gunicorn worker's RSS, with
        the walk here). The copy writes the final message to the same events
        file and exits. Where fork is unavailable, the end is written here.
        """
        from leakscope.heap.fork import fork_copy

        copy = fork_copy()
        if copy == 0:
            code = 1
            try:
                self.pid = os.getpid()  # the copy speaks for its parent, in its file
                self.finalize(reason)
                code = 0
            finally:
                os._exit(code)
        if copy is None:
            self.finalize(reason)
            return None
        self.finalized = True  # by the copy: never again here (at exit)
        return copy


def _reap(pid: int, wait: float) -> None:
    """Wait for the copy writing the end, and collect it (no zombie); kill it if stuck."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return  # the worker reaps its children itself (a SIGCHLD handler)
        if done:
            return
        if time.monotonic() >= deadline:
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass
            return
        time.sleep(WATCH_SECONDS)


def _parent_runs(name: str) -> bool:
    """Whether this process's parent is ``name`` (a pool child of a pre-fork master)."""
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as stream:
            argv = stream.read().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg.decode(errors="replace")) == name for arg in argv[:2])


def _forget(private: str, aside: dict[str, types.ModuleType],
            cached: dict[str, set[Any]]) -> None:
    """leakscope's modules out of ``sys.modules`` (the worker's own copy back), our path out.

    Every cache that leakscope's imports filled goes too: the import system's
    finders for the private path and the packages under it, and the regular
    expressions compiled since the attach (they would keep the allocator's
    arenas that leakscope's modules used from being given back).
    """
    global _attached
    _attached = None
    status = agentmod._status_fd
    if status is not None:
        agentmod._status_fd = None
        try:
            os.close(status[1])
        except OSError:
            pass
    for name in [n for n in sys.modules if n == "leakscope" or n.startswith("leakscope.")]:
        del sys.modules[name]
    sys.modules.update(aside)
    while private in sys.path:
        sys.path.remove(private)
    for entry in [e for e in sys.path_importer_cache
                  if e == private or e.startswith(private + os.sep)]:
        del sys.path_importer_cache[entry]
    regex = sys.modules.get("re")
    for name, before in cached.items():
        cache = getattr(regex, name, None)
        if isinstance(cache, dict):
            for key in [k for k in cache if k not in before]:
                cache.pop(key, None)
    _give_back_memory()
    _sweep_after(threading.current_thread())


# Runs in a namespace of its own: the last collection must not be kept from
# freeing leakscope's modules by the very function that asks for it.
_SWEEP = """
def sweep(watcher):
    watcher.join()
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
"""


def _sweep_after(watcher: threading.Thread) -> None:
    """Collect and trim once more, after the watcher has ended.

    Until then its frames keep ``leakscope.drive.attached``'s globals, and through
    them most of leakscope's modules, alive; a short thread whose function
    knows nothing of leakscope frees them, then gives the memory back.
    """
    namespace: dict[str, Any] = {}
    exec(compile(_SWEEP, "<leakscope attach: sweep>", "exec"), namespace)  # noqa: S102
    threading.Thread(target=namespace["sweep"], args=(watcher,),
                     name="leakscope-attach-sweep", daemon=True).start()


def _give_back_memory() -> None:
    """Free what leakscope's modules, traces and walks took, and hand it back to the system.

    Module namespaces are reference cycles: without a collection they would
    wait for the worker's next full one. glibc keeps freed memory in its
    arenas (this thread's too) until ``malloc_trim``; without it the worker's
    RSS stayed 2 MiB above what it was before the attach.
    """
    gc.collect()
    _trim()


def _trim() -> None:
    """glibc's free memory back to the system (``malloc_trim``); calls no Python code."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc
