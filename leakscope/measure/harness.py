"""The traced process: loads the worker, runs the collector, streams every loop out.

The leakscope command starts this module as a child process. Keeping the
worker apart from the command means the terminal rendering (rich) never
allocates inside the traced heap, a worker that hangs, calls ``os._exit`` or
crashes in C cannot take the loops gathered so far with it, and Ctrl-C loses
nothing: each loop has already reached the parent when the next one starts.

Messages are JSON lines on a pipe, declared in ``leakscope.model.wire``: ``started``,
``loaded``, ``measuring``, ``loop``, ``checkpoint``, ``gathered``, ``final`` and
``error``. Only the process leakscope started speaks
on it: a child the worker forks finds the channel closed, and the child dies
with leakscope (``PR_SET_PDEATHSIG``), so nothing is left behind.
"""

from __future__ import annotations

if __name__ == "__main__":
    # `python -m leakscope.measure.harness`. This frame stays under every loop of the
    # worker, and tracemalloc finds each captured frame's line by scanning
    # its code from the start: a call at the end of this module's code would
    # cost every traced allocation that scan. So the run starts here, from the
    # module imported under its own name, and never returns (os._exit).
    import importlib

    importlib.import_module("leakscope.measure.harness").entry()

import json
import os
import platform
import signal
import sys
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import leakscope
from leakscope.measure.collector import Collector
from leakscope.measure.hook import StopTracing
from leakscope.measure.target import TargetSpec, Worker, load
from leakscope.model import sites as sitemod
from leakscope.model import wire
from leakscope.model.errors import EXIT_USAGE, EXIT_WORKER, TargetError
from leakscope.model.settings import Settings

CONFIG_ENV = "LEAKSCOPE_HARNESS"
# The exit status of a harness whose channel the worker closed or replaced: the
# parent can no longer hear it, so the status is the only word it gets.
EXIT_CHANNEL_LOST = 199
# How often the fallback watcher (no prctl) looks for its parent.
PARENT_POLL_SECONDS = 1.0
# The process leakscope started; any other pid running this code is a fork.
_HARNESS_PID = os.getpid()
_LEAKSCOPE_DIR = os.path.dirname(os.path.abspath(leakscope.__file__))
# The machinery between the harness and the worker's first line: runpy for a
# tick script, importlib for a worker imported by name.
_HIDDEN_FILES = ("runpy.py", "<frozen runpy>", "<frozen importlib._bootstrap>",
                 "<frozen importlib._bootstrap_external>",
                 os.path.join("importlib", "__init__.py"))


class Channel:
    """JSON lines to the parent. Writes are whole lines, so a crash cuts cleanly.

    Only the process that opened it writes: a child the worker forks (and that
    returns into leakscope's loop) would interleave its loops with ours. The
    check is made at every write, because a fork from C runs no at-fork hook.
    A worker that closes the fd, or reuses its number, ends the harness with
    ``EXIT_CHANNEL_LOST``: a traceback here would only confuse.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pid = os.getpid()
        self._link = _fd_link(fd)
        self._identity = _identity(fd, self._link)
        self.armed = True

    def disarm(self) -> None:
        """In a forked child: close our copy, so the parent's reader sees EOF when we end."""
        if self.armed:
            self.armed = False
            try:
                os.close(self._fd)
            except OSError:
                pass

    def send(self, message: dict[str, Any]) -> None:
        if not self.armed or os.getpid() != self._pid:
            return
        data = wire.encode(message)
        try:
            if _identity(self._fd, self._link) != self._identity:
                os._exit(EXIT_CHANNEL_LOST)  # closed, or its number reused
            wire.write_all(self._fd, data)
        except BrokenPipeError:
            # The parent stopped listening (it timed out or was interrupted)
            # and has already said why; a traceback here would only confuse.
            os._exit(EXIT_WORKER)
        except OSError:
            os._exit(EXIT_CHANNEL_LOST)


def _fd_link(fd: int) -> str | None:
    """The fd's entry in /proc (Linux), or None where there is none."""
    link = f"/proc/self/fd/{fd}"
    try:
        os.readlink(link)
    except OSError:
        return None
    return link


def _identity(fd: int, link: str | None = None) -> object:
    """What the fd points at: a closed or reused number no longer matches.

    Read at every message, under tracemalloc: where /proc names the pipe
    (``pipe:[inode]``, one string) that is read instead of ``os.fstat``,
    whose result makes some twenty objects.
    """
    try:
        if link is not None:
            return os.readlink(link)
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def tie_to_parent(parent_pid: int) -> None:
    """Die with leakscope: a SIGKILLed leakscope must not leave the worker running.

    Linux's ``PR_SET_PDEATHSIG`` has the kernel send SIGKILL when the parent
    dies. Where it is missing, a daemon thread watches ``getppid()``. Either
    way, a parent already gone before we got here is caught by the pid check.
    """
    if not _set_pdeathsig(signal.SIGKILL):
        import threading

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(PARENT_POLL_SECONDS)
            os._exit(EXIT_WORKER)

        threading.Thread(target=watch, name="leakscope-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(EXIT_WORKER)


def _set_pdeathsig(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, int(signum), 0, 0, 0) == 0  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return False


def worker_traceback(exc: BaseException) -> str:
    """The worker's traceback with leakscope's and runpy's frames taken out."""
    tb = traceback.TracebackException.from_exception(exc)
    for entry in _chain(tb):
        kept = [
            frame for frame in entry.stack
            if not frame.filename.startswith(_LEAKSCOPE_DIR)
            and not frame.filename.endswith(_HIDDEN_FILES)
        ]
        entry.stack = traceback.StackSummary.from_list(kept)
    return "".join(tb.format())


def _chain(
    first: traceback.TracebackException,
) -> Iterator[traceback.TracebackException]:
    seen = set()
    tb: traceback.TracebackException | None = first
    while tb is not None and id(tb) not in seen:
        seen.add(id(tb))
        yield tb
        tb = tb.__cause__ or tb.__context__


class _InterruptOnce:
    """First SIGINT interrupts the worker; later ones must not cut our own finish.

    Once every loop is gathered (``fired`` set by the harness), SIGINT is
    the parent's to judge: the final collection, holder walk and teardown
    run to their end unless leakscope itself gives up and kills us.
    """

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, frame: object) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt


def exit_text(code: object) -> str:
    """``sys.exit(...)`` as the worker wrote it, for the one-line error."""
    return "sys.exit()" if code is None else f"sys.exit({code!r})"


def run_loops(worker: Worker, collector: Collector) -> dict[str, Any]:
    """Drive the worker; returns how the loop ended.

    ``phase`` says where a failure happened (``setup``, ``loop``), so that
    the parent's message points at the right function.
    """
    phase = "setup"
    try:
        if worker.setup is not None:
            worker.setup()
        phase = "loop"
        collector.begin()
        if worker.run_script is not None:
            worker.run_script()
            return {"status": "script-ended"}
        assert worker.iteration is not None
        _loop(worker.iteration, collector.end_loop)
        return {"status": "done"}
    except StopTracing:
        return {"status": "done"}
    except KeyboardInterrupt:
        return {"status": "interrupted"}
    except SystemExit as exc:
        return {"status": "exited", "code": exc.code if isinstance(exc.code, int) else 1,
                "message": exit_text(exc.code), "loop": collector.index, "phase": phase}
    except BaseException as exc:  # noqa: BLE001 - a worker may raise anything
        return {"status": "raised", "traceback": worker_traceback(exc),
                "error": error_text(exc), "loop": collector.index, "phase": phase}


def _loop(iteration: Callable[[], object], end_loop: Callable[[], bool]) -> None:
    """The worker's loop, in a code object of its own, the call at its start.

    Every frame under the worker's ``iteration()`` is short, its call near
    its start: tracemalloc reads each captured frame's line by scanning its
    code up to the call, for every allocation the worker makes (a frame
    sitting 150 lines into a function made a worker's traced loop 40% dearer).
    """
    while True:
        iteration()
        if os.getpid() != _HARNESS_PID:
            _leave_forked_child()
        if not end_loop():
            return


def error_text(exc: BaseException) -> str:
    """``MemoryError``, ``ValueError: order 42``: no dangling colon for an empty message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _leave_forked_child() -> None:
    """A child the worker forked came back into leakscope's loop: that loop is not its own.

    Its loops are not measured (only the process leakscope started is), so it
    leaves at once; ``os._exit`` because the parent's atexit handlers and
    buffers are not the child's to run or flush.
    """
    os._exit(0)


def _disarm_in_child(channel: Channel) -> None:
    """After ``os.fork()`` in the worker: the child neither speaks to leakscope nor ticks.

    A copy leakscope forked to walk or search the heap (``heap.fork``) keeps
    tracemalloc's record, which it reads; it ends by itself.
    """
    from leakscope.measure import hook

    channel.disarm()
    walking = sys.modules.get("leakscope.heap.fork")
    if walking is not None and walking.walk_fork_in_progress:
        return
    hook.install(None)
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def entry() -> None:
    """The process's life: main(), the worker's atexit handlers, then out."""
    code = main()
    # The worker's atexit handlers run as they would under `python worker.py`;
    # then we skip interpreter teardown, so that a non-daemon thread left by
    # the worker, or a crash in a C extension's finaliser, cannot hang or fail
    # a run whose verdict the parent already has.
    import atexit

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> int:
    """Start, loop, finish: short, so that its frame under the loop is cheap (see _loop)."""
    started = start()
    if isinstance(started, int):
        return started
    return finish(started, run_loops(started.worker, started.collector))


@dataclass
class Started:
    """What the start-up made and the finish needs."""

    channel: Channel
    worker: Worker
    collector: Collector


def start() -> Started | int:
    """The channel, the worker loaded, the collector: or the exit code of a failed start."""
    config = json.loads(os.environ.pop(CONFIG_ENV))
    if config.get("parent_pid"):
        tie_to_parent(int(config["parent_pid"]))
    fd = int(config["fd"])
    # The worker's own subprocesses must not hold the pipe open (the parent
    # waits for its end) nor write to it.
    os.set_inheritable(fd, False)
    channel = Channel(fd)
    os.register_at_fork(after_in_child=lambda: _disarm_in_child(channel))
    interrupt = _InterruptOnce()
    signal.signal(signal.SIGINT, interrupt)
    # From here on the parent's --timeout applies (start-up is not the worker's).
    channel.send(wire.first("started", python=platform.python_version(),
                            **sitemod.interpreter_paths()))
    spec = TargetSpec(**config["target"])
    settings = Settings.from_dict(config["settings"])
    name = spec.path or spec.label
    try:
        worker = load(spec, settings.args)
    except TargetError as exc:
        channel.send({"t": "error", "code": EXIT_USAGE, "message": exc.message})
        return EXIT_USAGE
    except KeyboardInterrupt:
        channel.send({"t": "error", "code": 130, "message": "interrupted while importing"})
        return 130
    except SystemExit as exc:
        channel.send({"t": "error", "code": EXIT_WORKER,
                      "message": f"{name}: worker called {exit_text(exc.code)} "
                                 "while being imported"})
        return EXIT_WORKER
    except BaseException as exc:  # noqa: BLE001
        channel.send({"t": "error", "code": EXIT_WORKER,
                      "message": f"{name}: worker raised {error_text(exc)} "
                                 "(while being imported)",
                      "traceback": worker_traceback(exc)})
        return EXIT_WORKER
    channel.send({"t": "loaded"})

    probe = None
    if settings.holders:
        from leakscope.heap.probe import HolderProbe

        probe = HolderProbe()
    collector = Collector(settings, wire.MessageObserver(channel.send), probe)

    def gathered() -> None:
        interrupt.fired = True
        channel.send({"t": "gathered"})

    collector.on_gathered = gathered
    return Started(channel, worker, collector)


def finish(started: Started, outcome: dict[str, Any]) -> int:
    """After the loops: the collector's finish, the worker's teardown, the final message."""
    channel, worker, collector = started.channel, started.worker, started.collector
    if not channel.armed:  # a forked child whose script ran to its end
        _leave_forked_child()
    try:
        final = collector.finish()
    except KeyboardInterrupt:
        final = {}
    if worker.teardown is not None and outcome["status"] in ("done", "interrupted"):
        try:
            worker.teardown()
        except BaseException as exc:  # noqa: BLE001
            outcome = {"status": "raised", "traceback": worker_traceback(exc),
                       "error": error_text(exc),
                       "loop": collector.index, "phase": "teardown"}
    channel.send({"t": "final", "outcome": outcome, "final": final})
    sys.stdout.flush()
    return 0

