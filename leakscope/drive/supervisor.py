"""The leakscope side of a trace: starts the traced child, gathers its loops into a Run.

The child (``leakscope.measure.harness``) streams one message per loop; this module
reads them off the pipe (``wire.Decoder`` checks each line) into the
``Assembler``, which builds the Run and tells the live observer, and turns
every way a worker can fail (raise, exit, hang, die, never tick) into a
typed error that carries the loops gathered before it. On Ctrl-C it asks
the child to stop, keeps everything that already arrived and returns a run
marked interrupted; once every loop has arrived, a first Ctrl-C no longer
cuts anything (``Interrupts``).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from leakscope.drive.assemble import Assembler, LiveObserver, NullObserver
from leakscope.drive.interpreter import with_private_path
from leakscope.measure import counters
from leakscope.measure.harness import CONFIG_ENV, EXIT_CHANNEL_LOST
from leakscope.measure.memray_window import locator_from_env
from leakscope.measure.target import TargetSpec
from leakscope.model import wire
from leakscope.model.errors import Abandoned, TargetError, WorkerError
from leakscope.model.runfile import Run, new_run, now_iso
from leakscope.model.settings import Settings

# After Ctrl-C, how long the child gets to send what it gathered.
INTERRUPT_GRACE = 10.0
# Until the child says it has started, --timeout does not apply: starting an
# interpreter and importing leakscope is not the worker's loop, and on a busy
# machine it can take longer than a short --timeout.
STARTUP_GRACE = 60.0
# After the final message, how long the child gets to exit on its own.
EXIT_GRACE = 5.0
# While waiting for a stopping child, how often a second Ctrl-C is looked for.
STOP_POLL = 0.1


class Interrupts:
    """What Ctrl-C (SIGINT) means to the leakscope process during one trace.

    Installed for the whole command, so that SIGINT stops a trace even when
    the shell started it in the background with SIGINT ignored. While loops
    are gathered, the first Ctrl-C raises KeyboardInterrupt (the child is
    asked to stop and what arrived is kept). From then on a press never
    raises: the second only sets ``forced`` (stop waiting for the child, as
    the first press's line promised), so it cannot cut the saving of what was
    gathered wherever it lands. Once every loop has arrived (``finishing()``),
    nothing is left to cut: the first press there only says so and the
    verdict is finished, printed and saved; any later one raises ``Abandoned``.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.presses = 0
        self.stopping = False
        self.forced = False
        self.finishing_mode = False
        self.finishing_presses = 0
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def finishing(self) -> None:
        """Every loop has arrived: from here a first Ctrl-C no longer interrupts."""
        self.finishing_mode = True

    def crossed(self) -> None:
        """The first Ctrl-C crossed the child's word that every loop was in: it cut nothing."""
        self.finishing_mode = True
        self.finishing_presses = 1
        self.say(_FINISHING)

    def _handle(self, signum: int, frame: object) -> None:
        self.presses += 1
        if self.finishing_mode:
            self.finishing_presses += 1
            if self.finishing_presses == 1:
                self.say(_FINISHING)
                return
            raise Abandoned
        if self.stopping:
            self.forced = True
            return
        self.stopping = True
        self.say("leakscope: interrupted: stopping the worker and keeping the loops "
                 "gathered (Ctrl-C again if it does not stop)")
        raise KeyboardInterrupt


_FINISHING = ("leakscope: interrupted: every loop was gathered; finishing the verdict and "
              "saving the run (Ctrl-C again to abandon it)")


def _child_env(fd: int, spec: TargetSpec, settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    config = {"fd": fd, "target": spec.__dict__, "settings": settings.to_dict(),
              "parent_pid": os.getpid()}
    env[CONFIG_ENV] = json.dumps(config)
    env["GLIBC_TUNABLES"] = counters.exact_malloc_tunables(env.get("GLIBC_TUNABLES"))
    # leakscope alone, through a private path: never the tool's site-packages.
    env["PYTHONPATH"] = with_private_path(env.get("PYTHONPATH"))
    return env


def trace(
    spec: TargetSpec,
    settings: Settings,
    observer: LiveObserver | None = None,
    *,
    on_interrupt: Callable[[], None] | None = None,
    interrupts: Interrupts | None = None,
) -> Run:
    """Trace the worker in a child process and return the run (not yet analysed).

    A worker that fails after some loops arrived raises ``WorkerError`` with
    those loops in ``run``, marked with how the run ``ended``.
    """
    observer = observer or NullObserver()
    if settings.locator == "auto":
        settings = replace(settings, locator=locator_from_env())
    capture_dir = ""
    if settings.locator != "tracemalloc":
        # The memray window's capture lives here, and goes with it.
        _remove_stale_captures()
        capture_dir = tempfile.mkdtemp(prefix=f"{CAPTURE_PREFIX}{os.getpid()}-")
    try:
        return _trace(spec, replace(settings, capture_dir=capture_dir), observer,
                      on_interrupt=on_interrupt, interrupts=interrupts)
    finally:
        if capture_dir:
            shutil.rmtree(capture_dir, ignore_errors=True)


CAPTURE_PREFIX = "leakscope-memray-"


def _remove_stale_captures() -> None:
    """Capture directories left by a leakscope that was killed (SIGKILL skips ``finally``):
    only this user's, only those whose leakscope (the pid in the name) is gone."""
    try:
        entries = list(Path(tempfile.gettempdir()).glob(f"{CAPTURE_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(CAPTURE_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or entry.lstat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _trace(
    spec: TargetSpec,
    settings: Settings,
    observer: LiveObserver,
    *,
    on_interrupt: Callable[[], None] | None,
    interrupts: Interrupts | None,
) -> Run:
    cwd = os.getcwd()
    run = new_run(spec.text, settings.to_dict())
    run.settings.pop("args", None)
    run.settings.pop("capture_dir", None)
    run.settings["worker_args"] = list(settings.args)
    run.observations["cwd"] = cwd
    run.observations["target_kind"] = spec.kind
    run.mode = settings.mode
    assembler = Assembler(run, settings.top, cwd, observer)
    if interrupts is not None:
        assembler.on_gathered = interrupts.finishing
    decoder = wire.Decoder()
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [settings.python or sys.executable, "-m", "leakscope.measure.harness"],
            pass_fds=(write_fd,), env=_child_env(write_fd, spec, settings),
        )
    finally:
        os.close(write_fd)
    interrupted = False
    timed_out = False
    garbled: wire.WireError | None = None
    stop_now = True  # until the pump ends normally: a stalled or abandoned child is killed
    try:
        try:
            _pump(read_fd, decoder, assembler, settings.timeout,
                  first=max(settings.timeout, STARTUP_GRACE))
        except KeyboardInterrupt:
            _drain(read_fd, decoder, assembler)
            if not assembler.gathered:
                raise
            # The child had already said every loop was in: let it finish.
            if interrupts is not None:
                interrupts.crossed()
            _pump(read_fd, decoder, assembler, settings.timeout)
        stop_now = False
    except KeyboardInterrupt:
        interrupted = True
        if on_interrupt is not None:
            on_interrupt()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        forced = (lambda: interrupts.forced) if interrupts is not None else None
        try:
            # In all, not per message: a worker that ignores SIGINT goes on
            # sending loops, and would otherwise keep us for its whole run.
            # A second Ctrl-C (``forced``), wherever it came, ends the wait.
            _pump(read_fd, decoder, assembler, INTERRUPT_GRACE,
                  until=time.monotonic() + INTERRUPT_GRACE, stop_when=forced)
        except (KeyboardInterrupt, TimeoutError, wire.WireError):
            pass
    except TimeoutError:
        timed_out = True
    except wire.WireError as exc:
        garbled = exc
    finally:
        os.close(read_fd)
        _reap(proc, quick=stop_now)
    run.finished_at = now_iso()
    if assembler.outcome is not None and assembler.outcome.get("status") == "interrupted":
        # SIGINT reached the child alone (kill -INT from elsewhere): the run
        # stopped early all the same, so it is partial, not a full verdict.
        interrupted = True
    if (interrupted and assembler.gathered
            and (assembler.outcome or {}).get("status") == "done"):
        # Ctrl-C crossed the child's word that every loop was in: it cut nothing.
        interrupted = False
        run.observations["interrupted_while_finishing"] = True
    if interrupted:
        run.observations["interrupted"] = True
        return assembler.finish()
    name = spec.path or spec.label
    try:
        if isinstance(garbled, wire.VersionError):
            raise TargetError(f"{name}: cannot read the worker's process: {garbled.reason}")
        if garbled is not None:
            raise WorkerError(
                f"{name}: worker wrote to leakscope's channel (fd {write_fd}) in loop "
                f"{len(run.loops)}: {garbled}; a worker must not write to file descriptors "
                "it did not open"
            )
        _raise_for_failure(spec, settings, assembler, proc, timed_out, write_fd)
    except WorkerError as exc:
        if run.loops:
            # Nothing gathered is lost: the loops that arrived make a partial run.
            # The cause without the advice after it, for the verdict's first words.
            run.observations["ended"] = exc.message.removeprefix(f"{name}: ").split("; ")[0]
            exc.run = assembler.finish()
        raise
    return assembler.finish()


def _pump(
    fd: int, decoder: wire.Decoder, assembler: Assembler, timeout: float,
    first: float | None = None, until: float | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> None:
    """Read messages until the child closes the pipe; TimeoutError if it stalls.

    ``first`` is the wait for the first message, when the child is still
    starting up (``timeout`` if not given); ``until`` a ``time.monotonic()``
    after which to stop waiting at all; ``stop_when`` a flag a signal handler
    sets, read at least every STOP_POLL seconds (TimeoutError once set). A
    line that is not one of the harness's messages raises ``wire.WireError``;
    the messages before it are in.
    """
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    wait = timeout if first is None else first
    try:
        while True:
            if until is not None:
                wait = min(wait, until - time.monotonic())
            if wait < 0:
                raise TimeoutError
            if stop_when is not None:
                if stop_when():
                    raise TimeoutError
                if not selector.select(min(wait, STOP_POLL)):
                    if wait <= STOP_POLL:
                        raise TimeoutError
                    wait -= STOP_POLL
                    continue
            elif not selector.select(wait):
                raise TimeoutError
            wait = timeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                decoder.close()
                return
            for line in decoder.lines(chunk):
                message = decoder.decode(line)
                try:
                    assembler.feed(message)
                except (ValueError, TypeError, KeyError, AttributeError,
                        RecursionError) as exc:
                    # Well-formed, yet nothing the harness sends: still not ours.
                    raise wire.WireError(f"{message['t']} message leakscope cannot use "
                                         f"({type(exc).__name__})", line) from None
    finally:
        selector.close()


def _drain(fd: int, decoder: wire.Decoder, assembler: Assembler) -> None:
    """Take in what the pipe already holds, without waiting for more."""
    try:
        _pump(fd, decoder, assembler, 0.0, until=time.monotonic() + 1.0)
    except TimeoutError:
        pass


def _reap(proc: subprocess.Popen, quick: bool) -> None:
    try:
        proc.wait(timeout=0.5 if quick else EXIT_GRACE)
        return
    except subprocess.TimeoutExpired:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _raise_for_failure(
    spec: TargetSpec, settings: Settings, assembler: Assembler,
    proc: subprocess.Popen, timed_out: bool, channel_fd: int = -1,
) -> None:
    loops = len(assembler.run.loops)
    name = spec.path or spec.label
    if assembler.error is not None:
        error = assembler.error
        cls = TargetError if error["code"] == 2 else WorkerError
        raise cls(error["message"], detail=error.get("traceback"))
    if timed_out:
        if loops == 0 and spec.kind == "script":
            raise TargetError(
                f"{name}: no leakscope.tick() call within {settings.timeout:g}s: "
                "does the worker's loop call leakscope.tick()?"
            )
        if not assembler.loaded:
            raise WorkerError(
                f"{name}: worker hung while being imported: nothing happened within "
                f"{settings.timeout:g}s; raise --timeout if its import is that slow"
            )
        raise WorkerError(
            f"{name}: worker hung: no loop finished within {settings.timeout:g}s "
            f"(stuck in loop {loops}); raise --timeout if a loop is that slow"
        )
    outcome = assembler.outcome
    if outcome is None:
        code = proc.returncode
        if code == EXIT_CHANNEL_LOST:
            raise WorkerError(
                f"{name}: worker closed leakscope's channel (fd {channel_fd}) in loop {loops}; "
                "a worker must not close file descriptors it did not open"
            )
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
        else:
            how = f"exited with code {code} (os._exit?)"
        raise WorkerError(f"{name}: worker process {how} in loop {loops} before finishing")
    status = outcome["status"]
    phase = outcome.get("phase", "loop")
    where = f"in {phase}()" if phase in ("setup", "teardown") else f"in loop {outcome.get('loop')}"
    if status == "raised":
        raise WorkerError(
            f"{name}: worker raised {outcome['error']} ({where})",
            detail=outcome["traceback"],
        )
    if status == "exited":
        text = outcome.get("message") or f"sys.exit({outcome['code']})"
        raise WorkerError(
            f"{name}: worker called {text} {where}; "
            "a worker must return from each loop, not exit"
        )
    if status == "script-ended":
        if loops == 0:
            raise TargetError(f"{name}: ran to the end without calling leakscope.tick()")
        assembler.run.observations["script_ended_early"] = True
