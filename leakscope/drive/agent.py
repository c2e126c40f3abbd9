"""`leakscope run` inside each Python process of the command: arms it, counts units, saves.

The start-up hook (``leakscope/_startup/sitecustomize.py``, put on
``PYTHONPATH`` by ``leakscope run``) calls ``activate()`` in every Python
process the command starts, when ``LEAKSCOPE_AGENT`` is set, the way
coverage.py measures subprocesses through ``COVERAGE_PROCESS_START``.
Spawned processes inherit the environment and arm themselves; forked ones
are re-armed by an at-fork handler, which also drops the parent's traces
(tracemalloc survives ``fork()``: the parent's allocations must not count
as the child's growth) and opens the child's own events file.

Each process writes JSON lines to its own file in the run directory: a
``hello`` when armed, then the same ``loop``/``checkpoint``/``final``
messages the trace harness sends through its pipe. A unit's line is written
when the unit ends, so a SIGKILL loses at most the unit in progress; the
``final`` message (tracebacks, the last holder walk) is written at exit, on
SIGTERM/SIGQUIT, and before ``os._exit`` (billiard's pool children and RQ's
work horses end that way).

Tracing starts only in a process that completes units, after its warm-up:
a Celery main process or a gunicorn master, which do no work themselves,
never run under tracemalloc.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import signal
import sys
import threading
import time
import tracemalloc
from typing import Any, NoReturn

from leakscope.measure import counters, hook
from leakscope.model import sites, wire
from leakscope.model.settings import Settings

ENV = "LEAKSCOPE_AGENT"
# In the run directory while `leakscope run` measures units: it goes just
# before leakscope stops the command, or once the command has ended, and each
# process stops measuring units when it is gone (the directory too).
RUNNING_MARKER = "running"

# How often a process doing units checks that its run is still on.
RUN_CHECK_SECONDS = 1.0

_agent: Agent | None = None
_real_os_exit = os._exit


def activate() -> Agent | None:
    """Arm this process if ``leakscope run`` started it and the run is still on (idempotent).

    A process started after the run (by a daemon that escaped it) is not
    armed, and takes leakscope's entries out of its environment, so that
    nothing it starts is either.
    """
    global _agent
    raw = os.environ.get(ENV)
    if not raw or _agent is not None:
        return _agent
    config = json.loads(raw)
    if not run_is_on(config):
        strip_environment(config)
        return None
    _agent = Agent(config)
    _agent.arm()
    return _agent


def run_is_on(config: dict[str, Any]) -> bool:
    """Whether the `leakscope run` that armed this process still reads its run directory."""
    if not os.path.isdir(config["dir"]):
        return False
    leader = config.get("leader")
    if leader is None:
        return True
    try:
        os.kill(int(leader), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a process of another user took the pid: gone too, but rare
    return True


# Read at import, while the private link (leakscope.drive.interpreter) this module
# may come through still exists: a process that outlives the run compares
# PYTHONPATH's entries with the real directories. The package's directory:
# this module lives one level down, in drive/.
_IMPORTED_FROM = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PACKAGE_DIR = os.path.realpath(_IMPORTED_FROM)


def strip_environment(config: dict[str, Any]) -> None:
    """Take out of ``os.environ`` what `leakscope run` put there, so later children are clean.

    Only leakscope's own entries go: the worker's own ``PYTHONPATH`` entries
    and ``GLIBC_TUNABLES`` settings stay, whatever it set since.
    """
    os.environ.pop(ENV, None)
    startup = os.path.join(_PACKAGE_DIR, "_startup")
    package_parent = os.path.dirname(_IMPORTED_FROM)
    restore = config.get("restore") or {}
    original = {os.path.realpath(p)
                for p in (restore.get("PYTHONPATH") or "").split(os.pathsep) if p}
    ours = {startup} | {p for p in (os.path.realpath(package_parent),) if p not in original}
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    kept = [p for p in paths if os.path.realpath(p) not in ours]
    if kept:
        os.environ["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        os.environ.pop("PYTHONPATH", None)
    sys.path[:] = [p for p in sys.path if not p or os.path.realpath(p) != startup]
    tunables = os.environ.get("GLIBC_TUNABLES")
    if tunables is not None and tunables != restore.get("GLIBC_TUNABLES"):
        settings = [part for part in tunables.split(":")
                    if part and part != counters.TCACHE_OFF]
        if restore.get("GLIBC_TUNABLES") is not None or settings:
            os.environ["GLIBC_TUNABLES"] = (restore.get("GLIBC_TUNABLES")
                                            or ":".join(settings))
        else:
            os.environ.pop("GLIBC_TUNABLES", None)


def current() -> Agent | None:
    return _agent


def peak_rss_bytes() -> int | None:
    """This process's own peak RSS: the high-water mark of its memory since it started.

    ``ru_maxrss`` alone is not that: Linux carries the high-water mark of the
    image an ``exec`` replaced into it, so a worker exec'd by `leakscope run`
    starts with the peak of leakscope's own process (tens of MiB), which
    looked like a spike the worker never had. Linux's ``VmHWM`` is the
    worker's own; it is read only while ``ru_maxrss`` is still at or under
    the figure inherited at start-up, since above it the two are equal. A
    pool child forked from the worker (Celery's) inherits nothing across exec,
    so there this is the ``ru_maxrss`` that ``--max-memory-per-child`` reads.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    scale = 1 if sys.platform == "darwin" else 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    if peak > _inherited_peak[1] or _inherited_peak[0] != os.getpid():
        return peak
    own = _high_water_mark()
    return own if own is not None else peak


# (pid, ru_maxrss in bytes when the agent armed that process)
_inherited_peak: tuple[int, int] = (0, 0)
_status_fd: tuple[int, int] | None = None


def note_inherited_peak() -> None:
    global _inherited_peak
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    scale = 1 if sys.platform == "darwin" else 1024
    _inherited_peak = (os.getpid(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def _high_water_mark() -> int | None:
    """``VmHWM`` from /proc/self/status (Linux), through a descriptor kept open per process."""
    global _status_fd
    pid = os.getpid()
    try:
        if _status_fd is None or _status_fd[0] != pid:
            if _status_fd is not None:
                os.close(_status_fd[1])
            _status_fd = (pid, os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC))
        data = os.pread(_status_fd[1], 8192, 0)
        start = data.index(b"VmHWM:") + 6
        return int(data[start:data.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        _status_fd = None
        return None


def initial_role(argv: list[str]) -> str:
    """A first name for the process from its command line; integrations refine it."""
    if not argv or argv[0] in ("", "-c"):
        return "python -c"
    if argv[0] == "-m" and len(argv) > 1:
        return f"python -m {argv[1]}"
    name = os.path.basename(argv[0])
    if name in ("__main__.py", "-m"):
        name = os.path.basename(os.path.dirname(argv[0]))
    return name


class WorkerObserver(wire.MessageObserver):
    """The collector's messages, written to this process's events file, with the peak RSS
    on every unit."""

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        loop["peak_rss_bytes"] = peak_rss_bytes()
        super().on_loop(loop, changes)


class Agent:
    """leakscope's state in one process of the command (re-armed after fork)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.directory: str = config["dir"]
        self.config = config
        self.pid = os.getpid()
        self.parent_pid = os.getppid()
        self.role = initial_role(list(sys.argv))
        self.unit = "unit"
        self.framework: str | None = None
        # Facts about the worker's own recycling settings, for the advice.
        self.info: dict[str, Any] = {}
        self.recorder: Any = None
        self.disarmed = False
        self.finalized = False
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._busy = False
        self._deferred_signal: int | None = None
        self.units = 0
        self.stopping = False
        self._running_path = os.path.join(self.directory, RUNNING_MARKER)
        self._run_checked_at = time.monotonic()
        self._handlers: dict[int, Any] = {}

    # ------------------------------------------------------------- arming

    def arm(self) -> None:
        note_inherited_peak()
        self._open()
        hook.install(self)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork_in_child)
        atexit.register(self._at_exit)
        os._exit = _os_exit
        for signum in (signal.SIGTERM, getattr(signal, "SIGQUIT", None)):
            if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, self._on_signal)
                self._handlers[signum] = self._on_signal
        from leakscope import integrations

        integrations.install(self)

    def _open(self) -> None:
        path = os.path.join(self.directory, f"{self.pid}-{time.monotonic_ns()}.jsonl")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(path, flags, 0o644)
        self.path = path
        argv = list(getattr(sys, "orig_argv", sys.argv))
        self.send(wire.first(
            "hello", pid=self.pid, parent_pid=self.parent_pid, role=self.role,
            command=shlex.join(argv), unit=self.unit, framework=self.framework,
            info=self.info, started_at=time.time(),
            python=sys.version.split()[0], **sites.interpreter_paths(),
        ))

    def send(self, message: dict[str, Any]) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            wire.send(fd, message)
        except OSError:
            self._fd = None  # the run directory is gone: stop writing, never fail the worker

    def describe(self, role: str | None = None, unit: str | None = None,
                 framework: str | None = None, **info: Any) -> None:
        """An integration names this process, its unit of work, and its limits."""
        if role:
            self.role = role
        if unit:
            self.unit = unit
        if framework:
            self.framework = framework
        self.info.update({k: v for k, v in info.items() if v is not None})
        self.send({"t": "process", "role": self.role, "unit": self.unit,
                   "framework": self.framework, "info": self.info})

    def disarm(self, reason: str) -> None:
        """Stop watching this process (an RQ work horse: one job, then gone)."""
        if self.disarmed or os.getpid() != self.pid:
            return
        self.disarmed = True
        if self.recorder is not None:
            self.recorder.abandon()
            self.recorder = None
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def run_over(self) -> bool:
        """Disarm for good if leakscope or its run directory is gone; say whether it was.

        What is left of this process is the worker alone: no tracing, no
        writing, no tick hook, the worker's own signal handlers and
        ``os._exit``, and an environment without leakscope's entries, so a
        daemon that escaped the run arms nothing it starts later.
        """
        if run_is_on(self.config):
            return False
        self.disarmed = True
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            try:
                recorder.abandon()
            except Exception:  # noqa: BLE001, S110 - leaving anyway
                pass
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        hook.install(None)
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        if threading.current_thread() is threading.main_thread():
            # Only the main thread may set handlers; elsewhere ours stays, and
            # does what the default would (_on_signal, disarmed, re-raises).
            for signum, handler in self._handlers.items():
                if signal.getsignal(signum) == handler:
                    signal.signal(signum, signal.SIG_DFL)
            self._handlers = {}
        if os._exit is _os_exit:
            os._exit = _real_os_exit
        strip_environment(self.config)
        return True

    # -------------------------------------------------------------- units

    def end_loop(self) -> bool:
        """``leakscope.tick()`` under ``leakscope run``: one unit ended; never stop."""
        self.unit_done()
        return True

    def unit_done(self) -> None:
        """One unit of work (task, job, request, tick) ended in this process."""
        if self.disarmed or self.finalized or self._busy or os.getpid() != self.pid:
            return
        with self._lock:
            if self.disarmed or not self._measuring_units():
                return
            self._busy = True
            try:
                recorder = self.recorder
                if recorder is None:
                    recorder = self._start_recorder()
                recorder.end_loop()
                self.units += 1
            except Exception as exc:  # noqa: BLE001 - leakscope must never break the worker
                self._give_up(exc)
            finally:
                self._busy = False
        if self._deferred_signal is not None:
            self._on_signal(self._deferred_signal, None)

    def _measuring_units(self) -> bool:
        """Whether units still count: the run is on and leakscope is not stopping the command.

        One stat of the marker per unit; whether leakscope is alive at all,
        once a second (a process that outlived it disarms, run_over()).
        """
        now = time.monotonic()
        if now - self._run_checked_at >= RUN_CHECK_SECONDS:
            self._run_checked_at = now
            if self.run_over():
                return False
        if self.stopping or not os.path.exists(self._running_path):
            # `leakscope run` is stopping the command, or has ended: units that
            # end while the worker shuts down are not measured (launcher._stop),
            # and a process that outlived the run disarms.
            self.stopping = True
            self.run_over()
            return False
        return True

    def _give_up(self, exc: BaseException) -> None:
        """Stop measuring this process, say why in its log, and let the worker go on."""
        self.send({"t": "agent-error", "message": f"{type(exc).__name__}: {exc}"})
        recorder, self.recorder = self.recorder, None
        self.disarmed = True
        if recorder is not None:
            try:
                recorder.abandon()
            except Exception:  # noqa: BLE001, S110 - already giving up
                pass
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        hook.install(None)

    def _start_recorder(self) -> Any:
        from leakscope.measure.worker_collector import UnitCollector

        settings = Settings.from_dict(self.config["settings"])
        may_trace, trace_first = True, False
        if settings.sample > 1:
            # --sample K: every Kth process to do work traces its window at
            # once; the others are watched with the counters only.
            slot = self._claim_slot()
            may_trace = trace_first = slot % settings.sample == 0
            settings.sample = 0
            self.describe(sample_slot=slot, traced=may_trace)
        probe = None
        if settings.holders and may_trace:
            from leakscope.heap.probe import HolderProbe

            probe = HolderProbe()
        recorder = self.recorder = UnitCollector(settings, WorkerObserver(self.send), probe,
                                                 may_trace, trace_first)
        recorder.begin()
        hook.install(self)  # ticks come here, not straight to the collector
        return recorder

    def _claim_slot(self) -> int:
        """This process's number among those that did work, first come first served."""
        for slot in range(100000):
            try:
                fd = os.open(os.path.join(self.directory, f"slot-{slot}"),
                             os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            except OSError:
                return 0
            os.close(fd)
            return slot
        return 0

    # ------------------------------------------------------------ endings

    def finalize(self, reason: str) -> None:
        """Write this process's final message: once, and only in the process that owns it."""
        if self.finalized or self.disarmed or os.getpid() != self.pid or self.run_over():
            return
        self.finalized = True
        # Read before close(): its last walk and collection are leakscope's memory, not the
        # worker's.
        rss, peak = counters.rss_bytes(), peak_rss_bytes()
        final: dict[str, Any] = {}
        outcome: dict[str, Any] = {"status": "done", "reason": reason}
        recorder, self.recorder = self.recorder, None
        if recorder is not None and not self._busy:
            try:
                final = recorder.close()
            except BaseException as exc:  # noqa: BLE001 - a save must not fail an exit
                outcome = {"status": "done", "reason": reason,
                           "close_error": f"{type(exc).__name__}: {exc}"}
        final["rss_bytes"] = rss
        final["peak_rss_bytes"] = peak
        final["units"] = self.units
        self.send({"t": "final", "outcome": outcome, "final": final})
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _at_exit(self) -> None:
        self.finalize("exit")

    def _on_signal(self, signum: int, frame: object) -> None:
        if os.getpid() == self.pid and not self.finalized:
            if self._busy:
                self._deferred_signal = signum  # finish the unit's record first
                return
            self.finalize(signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _after_fork_in_child(self) -> None:
        holders = sys.modules.get("leakscope.heap.fork")
        if holders is not None and getattr(holders, "walk_fork_in_progress", False):
            return  # leakscope's own walking copy: it exits at once, untouched
        if self.disarmed:
            return
        if self.recorder is not None:
            self.recorder.abandon()
            self.recorder = None
        if tracemalloc.is_tracing():
            tracemalloc.stop()  # the parent's traces are not this child's growth
        hook.install(self)
        if self._fd is not None:
            os.close(self._fd)  # our copy only: the parent keeps writing its own file
            self._fd = None
        self.parent_pid, self.pid = self.pid, os.getpid()
        if self.run_over():
            return
        note_inherited_peak()
        self.role = f"forked from {self.role}"
        self.units = 0
        self.finalized = False
        self._busy = False
        self._deferred_signal = None
        self._lock = threading.Lock()
        self._run_checked_at = 0.0  # a forked child checks at its first unit
        try:
            self._open()
        except OSError:
            self.run_over()  # the run directory went between the check and now


def _os_exit(status: int) -> NoReturn:
    """``os._exit`` that first writes the exiting process's final message."""
    agent = _agent
    if agent is not None and agent.pid == os.getpid():
        agent.finalize("os._exit")
    _real_os_exit(status)
