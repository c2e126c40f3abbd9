"""The traced process: loads the worker, runs the collector, streams every loop out.

The leakscope command starts this module as a child process. Keeping the
worker apart from the command means the terminal rendering (rich) never
allocates inside the traced heap, a worker that hangs, calls ``os._exit`` or
crashes in C cannot take the loops gathered so far with it, and Ctrl-C loses
nothing: each loop has already reached the parent when the next one starts.

Messages are JSON lines on a pipe: ``measuring``, ``loop``, ``checkpoint``,
``final`` and ``error``.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import sys
import traceback
from typing import Any

import leakscope
from leakscope import sites as sitemod
from leakscope.collector import Collector
from leakscope.errors import EXIT_USAGE, EXIT_WORKER, TargetError
from leakscope.hook import StopTracing
from leakscope.settings import Settings
from leakscope.target import TargetSpec, Worker, load

CONFIG_ENV = "LEAKSCOPE_HARNESS"
_LEAKSCOPE_DIR = os.path.dirname(os.path.abspath(leakscope.__file__))
# The machinery between the harness and the worker's first line: runpy for a
# tick script, importlib for a worker imported by name.
_HIDDEN_FILES = ("runpy.py", "<frozen runpy>", "<frozen importlib._bootstrap>",
                 "<frozen importlib._bootstrap_external>",
                 os.path.join("importlib", "__init__.py"))


class Channel:
    """JSON lines to the parent. Writes are whole lines, so a crash cuts cleanly."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BrokenPipeError:
            # The parent stopped listening (it timed out or was interrupted)
            # and has already said why; a traceback here would only confuse.
            os._exit(EXIT_WORKER)


class ChannelObserver:
    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def on_measuring(self, warmup_loops: int) -> None:
        self.channel.send({"t": "measuring", "warmup_loops": warmup_loops})

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        self.channel.send({"t": "phase", "phase": phase, "info": info})

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        self.channel.send({"t": "loop", "loop": loop, "changes": changes})

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        self.channel.send({"t": "checkpoint", "loops_done": loops_done, "observation": observation})


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


def _chain(tb: traceback.TracebackException):
    seen = set()
    while tb is not None and id(tb) not in seen:
        seen.add(id(tb))
        yield tb
        tb = tb.__cause__ or tb.__context__


class _InterruptOnce:
    """First SIGINT interrupts the worker; later ones must not cut our own finish."""

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
        iteration = worker.iteration
        end_loop = collector.end_loop
        assert iteration is not None
        while True:
            iteration()
            if not end_loop():
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
                "error": f"{type(exc).__name__}: {exc}", "loop": collector.index,
                "phase": phase}


def main() -> int:
    config = json.loads(os.environ.pop(CONFIG_ENV))
    channel = Channel(int(config["fd"]))
    signal.signal(signal.SIGINT, _InterruptOnce())
    # From here on the parent's --timeout applies (start-up is not the worker's).
    channel.send({"t": "started", "python": platform.python_version(),
                  **sitemod.interpreter_paths()})
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
                      "message": f"{name}: worker raised {type(exc).__name__}: {exc} "
                                 "(while being imported)",
                      "traceback": worker_traceback(exc)})
        return EXIT_WORKER
    channel.send({"t": "loaded"})

    probe = None
    if settings.holders:
        from leakscope.holders import HolderProbe

        probe = HolderProbe()
    collector = Collector(settings, ChannelObserver(channel), probe)
    outcome = run_loops(worker, collector)
    try:
        final = collector.finish()
    except KeyboardInterrupt:
        final = {}
    if worker.teardown is not None and outcome["status"] in ("done", "interrupted"):
        try:
            worker.teardown()
        except BaseException as exc:  # noqa: BLE001
            outcome = {"status": "raised", "traceback": worker_traceback(exc),
                       "error": f"{type(exc).__name__}: {exc}",
                       "loop": collector.index, "phase": "teardown"}
    channel.send({"t": "final", "outcome": outcome, "final": final})
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
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
