"""The leakscope side of a trace: starts the traced child, gathers its loops into a Run.

The child (``leakscope.harness``) streams one message per loop; this module
turns them into ``Loop`` records and per-line series as they arrive, tells
the live observer, and turns every way a worker can fail (raise, exit, hang,
die, never tick) into a typed error that carries the loops gathered before
it. On Ctrl-C it asks the child to stop, keeps everything that already
arrived and returns a run marked interrupted; once every loop has arrived, a
first Ctrl-C no longer cuts anything (``Interrupts``).
"""

from __future__ import annotations

import json
import os
import platform
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
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import leakscope
from leakscope import counters
from leakscope import sites as sitemod
from leakscope.errors import Abandoned, TargetError, WorkerError
from leakscope.harness import CONFIG_ENV, EXIT_CHANNEL_LOST
from leakscope.interpreter import with_private_path
from leakscope.memray_window import ENGINES, locator_from_env
from leakscope.runfile import Frame, LineDelta, Loop, Run, Site
from leakscope.settings import Settings
from leakscope.target import TargetSpec

if TYPE_CHECKING:
    from leakscope.native_sites import Capture

# After Ctrl-C, how long the child gets to send what it gathered.
INTERRUPT_GRACE = 10.0
# Until the child says it has started, --timeout does not apply: starting an
# interpreter and importing leakscope is not the worker's loop, and on a busy
# machine it can take longer than a short --timeout.
STARTUP_GRACE = 60.0
# After the final message, how long the child gets to exit on its own.
EXIT_GRACE = 5.0


class Interrupts:
    """What Ctrl-C (SIGINT) means to the leakscope process during one trace.

    Installed for the whole command, so that SIGINT stops a trace even when
    the shell started it in the background with SIGINT ignored. While loops
    are gathered, SIGINT raises KeyboardInterrupt (the child is asked to stop
    and what arrived is kept). Once every loop has arrived (``finishing()``),
    nothing is left to cut: the first Ctrl-C only says so and the verdict is
    finished, printed and saved; any later one raises ``Abandoned``.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.presses = 0
        self.finishing_mode = False
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
        self.say(_FINISHING)

    def _handle(self, signum: int, frame: object) -> None:
        self.presses += 1
        if not self.finishing_mode:
            if self.presses == 1:
                self.say("leakscope: interrupted: stopping the worker and keeping the loops "
                         "gathered (Ctrl-C again if it does not stop)")
            raise KeyboardInterrupt
        if self.presses == 1:
            self.say(_FINISHING)
            return
        raise Abandoned


_FINISHING = ("leakscope: interrupted: every loop was gathered; finishing the verdict and "
              "saving the run (Ctrl-C again to abandon it)")


class LiveObserver(Protocol):
    def on_measuring(self, warmup_loops: int) -> None: ...
    def on_phase(self, phase: str, info: dict[str, Any]) -> None: ...
    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None: ...


class NullObserver:
    def on_measuring(self, warmup_loops: int) -> None:
        pass

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        pass

    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None:
        pass


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class RunBuilder:
    """Accumulates the child's messages into a Run."""

    def __init__(self, run: Run, top: int, cwd: str) -> None:
        self.run = run
        self.top = top
        self.cwd = cwd
        self.measured = 0
        # file:line -> change points (measured index, kept bytes, kept blocks)
        self.points: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        self.current: dict[tuple[str, int], tuple[int, int]] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        # The worker was imported; until then a stall is a hang at import.
        self.loaded = False
        # Every loop the run wants has arrived; only the child's finish is left.
        self.gathered = False
        # The start of a message the pipe has not finished delivering; kept
        # here so that a Ctrl-C between two reads loses nothing.
        self.pending = b""
        self.on_gathered: Callable[[], None] | None = None

    def display(self, filename: str) -> str:
        return sitemod.display_path(filename, self.cwd)

    def add_loop(
        self, data: dict[str, Any], raw_changes: list[list]
    ) -> tuple[Loop, list[LineDelta]]:
        loop = Loop(**{k: v for k, v in data.items() if k in Loop.__dataclass_fields__})
        extra = {k: v for k, v in data.items() if k not in Loop.__dataclass_fields__}
        for key, value in extra.items():  # figures newer than the dataclass
            setattr(loop, key, value)
        changes = []
        if not loop.warmup and loop.phase != "detect":
            for filename, line, size_diff, count_diff in raw_changes:
                at = (filename, line)
                size, count = self.current.get(at, (0, 0))
                size, count = size + size_diff, count + count_diff
                self.current[at] = (size, count)
                self.points.setdefault(at, []).append((self.measured, size, count))
                changes.append(LineDelta(self.display(filename), line, size_diff, count_diff))
            changes.sort(key=lambda c: (abs(c.size_diff), c.count_diff), reverse=True)
            loop.top = changes[: self.top]
            self.measured += 1
        self.run.loops.append(loop)
        return loop, changes

    def add_late_changes(self, raw_changes: list[list]) -> None:
        """Line changes that belong to the last measured loop, sent after it.

        A real worker's process diffs its lines only every few units; the
        units since its last diff arrive as one change when it exits.
        """
        if self.measured == 0:
            return
        last = self.measured - 1
        for filename, line, size_diff, count_diff in raw_changes:
            key = (filename, line)
            size, count = self.current.get(key, (0, 0))
            size, count = size + size_diff, count + count_diff
            self.current[key] = (size, count)
            points = self.points.setdefault(key, [])
            if points and points[-1][0] == last:
                points[-1] = (last, size, count)
            else:
                points.append((last, size, count))

    def add_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        observation["loops_done"] = loops_done
        observation["measured_done"] = self.measured
        self.checkpoints.append(observation)
        if self.run.loops and loops_done > 0:
            self.run.loops[min(loops_done, len(self.run.loops)) - 1].gc_objects = observation.get(
                "gc_objects"
            )

    def series(self, key: tuple[str, int]) -> list[int]:
        values = [0] * self.measured
        points = self.points.get(key, [])
        for (index, size, _), nxt in zip(points, points[1:] + [(self.measured, 0, 0)], strict=True):
            for i in range(index, nxt[0]):
                values[i] = size
        return values

    def build_sites(
        self, deep: dict[tuple[str, int], list[tuple[str, int]]] | None = None
    ) -> list[Site]:
        """Sites from tracemalloc's lines; ``deep`` (memray's full Python stacks by
        innermost line) completes a traceback too short to reach the user's code."""
        tracebacks = {
            (key[0], key[1]): [tuple(f) for f in frames]
            for key, frames in (self.final or {}).get("tracebacks", [])
        }
        result = []
        for key in self.points:
            size, count = self.current.get(key, (0, 0))
            raw = tracebacks.get(key) or [key]
            if deep and key in deep and not any(sitemod.is_user_file(f) for f, _ in raw):
                raw = deep[key]
            frames = _without_harness(raw)
            traceback = [
                Frame(self.display(f), int(n), sitemod.function_at(f, int(n))) for f, n in frames
            ]
            user = next(
                (fr for fr, (f, _) in zip(traceback, frames, strict=True)
                 if sitemod.is_user_file(f)),
                None,
            )
            series = self.series(key)
            result.append(
                Site(
                    file=traceback[0].file, line=key[1], function=traceback[0].function,
                    traceback=traceback, user_frame=user, bytes_per_iteration=0.0,
                    blocks_per_iteration=self._block_rate(key), growing=False,
                    kept_bytes=size, kept_blocks=count, series=series,
                )
            )
        return result

    def _block_rate(self, key: tuple[str, int]) -> float:
        points = self.points.get(key, [])
        if self.measured < 2 or not points:
            return 0.0
        return round(points[-1][2] / self.measured, 2)


def _without_harness(frames: list) -> list:
    """The traceback as the worker sees it: leakscope's harness and runpy cut off."""
    kept = [
        frame for frame in frames
        if not sitemod.is_own_file(frame[0]) and not str(frame[0]).startswith("<frozen runpy")
        and not str(frame[0]).endswith("runpy.py")
    ]
    return kept or frames[:1]


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
    if settings.mode == "fast" and settings.locator != "tracemalloc":
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
    run = Run(
        target=spec.text, python=platform.python_version(), started_at=now_iso(),
        settings=settings.to_dict(), leakscope_version=leakscope.__version__,
        platform=f"{platform.system()} {platform.machine()}",
    )
    run.settings.pop("args", None)
    run.settings.pop("capture_dir", None)
    run.settings["worker_args"] = list(settings.args)
    run.observations["cwd"] = cwd
    run.observations["target_kind"] = spec.kind
    run.mode = settings.mode
    builder = RunBuilder(run, settings.top, cwd)
    if interrupts is not None:
        builder.on_gathered = interrupts.finishing
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [settings.python or sys.executable, "-m", "leakscope.harness"],
            pass_fds=(write_fd,), env=_child_env(write_fd, spec, settings),
        )
    finally:
        os.close(write_fd)
    interrupted = False
    timed_out = False
    garbled: str | None = None
    stop_now = True  # until the pump ends normally: a stalled or abandoned child is killed
    try:
        try:
            _pump(read_fd, builder, observer, settings.timeout,
                  first=max(settings.timeout, STARTUP_GRACE))
        except KeyboardInterrupt:
            _drain(read_fd, builder, observer)
            if not builder.gathered:
                raise
            # The child had already said every loop was in: let it finish.
            if interrupts is not None:
                interrupts.crossed()
            _pump(read_fd, builder, observer, settings.timeout)
        stop_now = False
    except KeyboardInterrupt:
        interrupted = True
        if on_interrupt is not None:
            on_interrupt()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        # A second Ctrl-C may already have come (while the pipe was drained).
        if interrupts is None or interrupts.presses < 2:
            try:
                # In all, not per message: a worker that ignores SIGINT goes on
                # sending loops, and would otherwise keep us for its whole run.
                _pump(read_fd, builder, observer, INTERRUPT_GRACE,
                      until=time.monotonic() + INTERRUPT_GRACE)
            except (KeyboardInterrupt, TimeoutError, ChannelGarbled):
                pass
    except TimeoutError:
        timed_out = True
    except ChannelGarbled as exc:
        garbled = exc.text
    finally:
        os.close(read_fd)
        _reap(proc, quick=stop_now)
    run.finished_at = now_iso()
    if builder.outcome is not None and builder.outcome.get("status") == "interrupted":
        # SIGINT reached the child alone (kill -INT from elsewhere): the run
        # stopped early all the same, so it is partial, not a full verdict.
        interrupted = True
    if interrupted and builder.gathered and (builder.outcome or {}).get("status") == "done":
        # Ctrl-C crossed the child's word that every loop was in: it cut nothing.
        interrupted = False
        run.observations["interrupted_while_finishing"] = True
    if interrupted:
        run.observations["interrupted"] = True
        return _finish(run, builder)
    name = spec.path or spec.label
    try:
        if garbled is not None:
            raise WorkerError(
                f"{name}: worker wrote to leakscope's channel (fd {write_fd}) in loop "
                f"{len(run.loops)}: {garbled}; a worker must not write to file descriptors "
                "it did not open"
            )
        _raise_for_failure(spec, settings, builder, proc, timed_out, write_fd)
    except WorkerError as exc:
        if run.loops:
            # Nothing gathered is lost: the loops that arrived make a partial run.
            # The cause without the advice after it, for the verdict's first words.
            run.observations["ended"] = exc.message.removeprefix(f"{name}: ").split("; ")[0]
            exc.run = _finish(run, builder)
        raise
    return _finish(run, builder)


class ChannelGarbled(Exception):
    """A line on the channel that the harness did not write: the worker wrote to our fd."""

    def __init__(self, line: bytes) -> None:
        super().__init__(line)
        shown = line[:40].decode("utf-8", "replace")
        self.text = repr(shown) + ("..." if len(line) > 40 else "")


def _pump(
    fd: int, builder: RunBuilder, observer: LiveObserver, timeout: float,
    first: float | None = None, until: float | None = None,
) -> None:
    """Read messages until the child closes the pipe; TimeoutError if it stalls.

    ``first`` is the wait for the first message, when the child is still
    starting up (``timeout`` if not given); ``until`` a ``time.monotonic()``
    after which to stop waiting at all. A line that is not one of the
    harness's messages raises ``ChannelGarbled``.
    """
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    wait = timeout if first is None else first
    try:
        while True:
            if until is not None:
                wait = min(wait, until - time.monotonic())
            if wait < 0 or not selector.select(wait):
                raise TimeoutError
            wait = timeout
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                if builder.pending:
                    raise ChannelGarbled(builder.pending)
                return
            *lines, builder.pending = (builder.pending + chunk).split(b"\n")
            for line in lines:
                try:
                    message = json.loads(line)
                    _check_shape(message)
                    _dispatch(message, builder, observer)
                except (ValueError, TypeError, KeyError, AttributeError,
                        RecursionError):
                    raise ChannelGarbled(line) from None
    finally:
        selector.close()


# The fields each of the harness's messages carries, with their JSON types:
# anything else on the channel was not written by the harness.
_SHAPES: dict[str, dict[str, type]] = {
    "loop": {"loop": dict, "changes": list},
    "measuring": {"warmup_loops": int},
    "phase": {"phase": str, "info": dict},
    "checkpoint": {"loops_done": int, "observation": dict},
    "final": {"outcome": dict, "final": dict},
    "error": {"code": int, "message": str},
}


def _check_shape(message: Any) -> None:
    """ValueError unless ``message`` is one of the harness's messages, as it writes them."""
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ValueError("not a message")
    for key, kind in _SHAPES.get(message["t"], {}).items():
        if not isinstance(message.get(key), kind):
            raise ValueError(f"{message['t']} message without {key}")
    if message["t"] == "final" and not isinstance(message["outcome"].get("status"), str):
        raise ValueError("final message without a status")


def _drain(fd: int, builder: RunBuilder, observer: LiveObserver) -> None:
    """Take in what the pipe already holds, without waiting for more."""
    try:
        _pump(fd, builder, observer, 0.0, until=time.monotonic() + 1.0)
    except TimeoutError:
        pass


def _dispatch(message: dict[str, Any], builder: RunBuilder, observer: LiveObserver) -> None:
    kind = message["t"]
    if kind == "loop":
        loop, changes = builder.add_loop(message["loop"], message["changes"])
        observer.on_loop(loop, changes)
    elif kind == "measuring":
        builder.run.settings["warmup_used"] = message["warmup_loops"]
        observer.on_measuring(message["warmup_loops"])
    elif kind == "phase":
        builder.run.observations.setdefault("phases", []).append(
            {"phase": message["phase"], "after_loops": len(builder.run.loops), **message["info"]}
        )
        observer.on_phase(message["phase"], message["info"])
    elif kind == "checkpoint":
        builder.add_checkpoint(message["loops_done"], message["observation"])
    elif kind == "final":
        builder.final = message["final"]
        builder.outcome = message["outcome"]
    elif kind == "error":
        builder.error = message
    elif kind == "loaded":
        builder.loaded = True
    elif kind == "started":
        # The worker's interpreter may not be ours: its paths say what is library.
        builder.run.python = message.get("python") or builder.run.python
        sitemod.register_interpreter(message.get("library_roots") or [],
                                     message.get("own_dirs") or [])
    elif kind == "gathered":
        builder.gathered = True
        if builder.on_gathered is not None:
            builder.on_gathered()


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
    spec: TargetSpec, settings: Settings, builder: RunBuilder,
    proc: subprocess.Popen, timed_out: bool, channel_fd: int = -1,
) -> None:
    loops = len(builder.run.loops)
    name = spec.path or spec.label
    if builder.error is not None:
        error = builder.error
        cls = TargetError if error["code"] == 2 else WorkerError
        raise cls(error["message"], detail=error.get("traceback"))
    if timed_out:
        if loops == 0 and spec.kind == "script":
            raise TargetError(
                f"{name}: no leakscope.tick() call within {settings.timeout:g}s: "
                "does the worker's loop call leakscope.tick()?"
            )
        if not builder.loaded:
            raise WorkerError(
                f"{name}: worker hung while being imported: nothing happened within "
                f"{settings.timeout:g}s; raise --timeout if its import is that slow"
            )
        raise WorkerError(
            f"{name}: worker hung: no loop finished within {settings.timeout:g}s "
            f"(stuck in loop {loops}); raise --timeout if a loop is that slow"
        )
    outcome = builder.outcome
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
        builder.run.observations["script_ended_early"] = True


def _finish(run: Run, builder: RunBuilder) -> Run:
    final = builder.final or {}
    for key in ("gc_enabled", "gc_collections", "harness_seconds", "malloc_counter", "detection",
                "other_threads_max"):
        if key in final:
            run.observations[key] = final[key]
    if "gc_final" in final:
        gc_final = final["gc_final"]
        gc_final["freed_by_line"] = [
            [builder.display(f), n, b, c] for f, n, b, c in gc_final.get("freed_by_line", [])
        ]
        gc_final["kept_by_line"] = [
            [builder.display(f), n, b] for f, n, b in gc_final.get("kept_by_line", [])
        ]
        run.observations["gc_final"] = gc_final
    capture = _read_locator(run, builder, final.get("locator") or {})
    run.sites = builder.build_sites(capture.deep if capture else None)
    if capture is not None:
        run.sites.extend(capture.sites)
    if final.get("holders"):
        from leakscope.holders import build_holders

        report = final["holders"]
        measured = [c["measured_done"] for c in builder.checkpoints]
        run.holders, run.bounded = build_holders(report, measured, builder.display)
        run.observations["holder_search"] = {
            key: report.get(key)
            for key in ("checkpoints", "walk_seconds", "max_visited", "forked_walks")
        }
        backref = report.get("backref")
        if backref:
            run.observations["holder_search"]["backrefs"] = backref.get("path") or backref
    run.observations["elapsed_seconds"] = round(
        sum(loop.seconds or 0 for loop in run.loops), 4
    )
    return run


def _read_locator(run: Run, builder: RunBuilder, locator: dict[str, Any]) -> Capture | None:
    """The memray window's capture (native sites, deep stacks), and which engine located.

    ``observations.locator`` is {"engine", "note", "loops"}: the engine that
    located this run's sites and, when memray was asked for but not used,
    why (one line, also printed).
    """
    if not locator:
        if run.mode == "fast" and any(loop.phase == "locate" for loop in run.loops):
            run.observations["locator"] = {"engine": "tracemalloc", "note": ""}
        return None
    engine = locator.get("engine") if locator.get("engine") in ENGINES else "tracemalloc"
    note = str(locator.get("note") or "")
    capture = None
    if engine == "memray":
        from leakscope.native_sites import read_capture

        capture = read_capture(locator, builder.display)
        note = capture.note
    run.observations["locator"] = {"engine": engine, "note": note,
                                   "loops": int(locator.get("loops") or 0)}
    return capture
