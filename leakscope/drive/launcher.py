"""`leakscope run`: starts a real worker command armed, watches its processes, gathers their runs.

The command runs unchanged in its own session, with the start-up hook on
``PYTHONPATH`` and ``LEAKSCOPE_AGENT`` naming a run directory; every Python
process it starts writes its own events file there (``agent.py``). This side
only reads those files as they grow, decides when to stop (the command
ended, ``--units``, ``--duration``, no unit within ``--timeout``, Ctrl-C),
stops the command the way its supervisor would (SIGTERM to the main process,
which hands it to its pool), then turns each file into an analysed Run.

The command keeps leakscope's stdin, stdout and stderr, as under ``memray
run`` or ``py-spy record``. Nothing outlives leakscope: the command's main
process gets SIGKILL from the kernel if leakscope dies (``PR_SET_PDEATHSIG``),
and every armed process disarms itself once leakscope's process or the run
directory is gone (``agent.py``).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import leakscope
from leakscope.drive.agent import ENV as AGENT_ENV
from leakscope.drive.agent import RUNNING_MARKER
from leakscope.drive.assemble import Assembler
from leakscope.drive.interpreter import with_private_path
from leakscope.measure import counters
from leakscope.measure.memray_window import locator_from_env
from leakscope.model import wire
from leakscope.model.errors import TargetError, UsageError, WorkerError
from leakscope.model.runfile import Run, Verdict, new_run, now_iso
from leakscope.model.settings import Settings

POLL_SECONDS = 0.5
# After the command's main process is gone, how long its children get to
# write their final messages before the whole process group is killed.
CHILDREN_GRACE = 5.0
RUN_DIR_PREFIX = "leakscope-run-"
# In the run directory: "pid start-time" of the leakscope process that owns it.
LEADER_FILE = "leader"
# Errors about the command point at its own output, which passed through.
OUTPUT_ABOVE = " (its own output is above)"
# Linux's prctl option: a signal for this process when its parent dies.
PR_SET_PDEATHSIG = 1
STARTUP_DIR = Path(leakscope.__file__).resolve().parent / "_startup"


@dataclass
class RunLimits:
    units: int | None = None
    duration: float | None = None
    timeout: float = 120.0
    stop_timeout: float = 30.0


@dataclass
class ProcessLog:
    """One process's events file, read as it grows: checked lines into its Assembler."""

    path: Path
    cwd: str
    top: int
    offset: int = 0
    decoder: wire.Decoder = field(default_factory=wire.Decoder)
    # From the process's hello on: its messages, gathered into its Run.
    assembler: Assembler | None = None
    gone: bool = False
    # Lines that were no message (a line cut by a crash mid-write, or the
    # worker writing on a descriptor it inherited): skipped, and counted.
    unreadable_lines: int = 0
    # Why this file cannot be read at all (a wire version this leakscope does not know).
    refused: str | None = None

    @property
    def hello(self) -> dict[str, Any] | None:
        return self.assembler.hello if self.assembler else None

    @property
    def process(self) -> dict[str, Any]:
        return self.assembler.process if self.assembler else {}

    @property
    def units(self) -> int:
        return len(self.assembler.run.loops) if self.assembler else 0

    @property
    def finished(self) -> bool:
        return self.gone or (self.assembler is not None and self.assembler.final is not None)

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            self.gone = True  # disarmed (an RQ work horse): not a process to report
            return
        self.offset += len(data)
        try:
            lines = self.decoder.lines(data)
        except wire.WireError:
            self.unreadable_lines += 1
            return
        for line in lines:
            try:
                self.feed(self.decoder.decode(line))
            except wire.VersionError as exc:
                self.refused = f"{self.path.name}: {exc.reason}"
                self.gone = True
                return
            except wire.WireError:
                self.unreadable_lines += 1

    def feed(self, message: dict[str, Any]) -> None:
        """One checked message; nothing counts before the process's hello."""
        if self.assembler is None:
            if message["t"] != "hello":
                return
            self.assembler = Assembler(new_run(message["command"]), self.top, self.cwd)
        try:
            self.assembler.feed(message)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
            self.unreadable_lines += 1  # well-formed, yet nothing an agent writes

    def label(self) -> str:
        return f"{self.process.get('role', '?')} (pid {self.process.get('pid', '?')})"


class Watch:
    """The run directory: every process's log, found as the files appear."""

    def __init__(self, directory: Path, top: int) -> None:
        self.directory = directory
        self.top = top
        self.cwd = os.getcwd()
        self.logs: dict[Path, ProcessLog] = {}

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            if path not in self.logs:
                self.logs[path] = ProcessLog(path, self.cwd, self.top)
        for log in self.logs.values():
            if not log.gone:
                log.poll()

    @property
    def processes(self) -> list[ProcessLog]:
        return [log for log in self.logs.values() if log.hello is not None and not log.gone]

    @property
    def units(self) -> int:
        return sum(log.units for log in self.processes)


# ------------------------------------------------------------ pre-flight


def preflight(argv: list[str]) -> str:
    """The command's executable, if it is a Python program; UsageError if not."""
    if not argv:
        raise UsageError("run: give the worker command after --, e.g. "
                         "leakscope run -- celery -A proj worker")
    name = argv[0]
    path = shutil.which(name)
    if path is None:
        raise TargetError(f"{name}: command not found")
    if not _is_python(path):
        raise TargetError(
            f"{name}: not a Python program ({path}); leakscope run traces Python "
            "processes: give the python, celery, rq or gunicorn command itself"
        )
    return path


def _is_python(path: str) -> bool:
    base = os.path.basename(os.path.realpath(path))
    if base.startswith(("python", "pypy")) or os.path.basename(path).startswith("python"):
        return True
    try:
        with open(path, "rb") as stream:
            head = stream.read(256)
    except OSError:
        return False
    if not head.startswith(b"#!"):
        return False
    first = head[2:].split(b"\n", 1)[0]
    return b"python" in first


def agent_env(directory: Path, settings: Settings) -> dict[str, str]:
    """The command's environment: armed, with what it replaces kept for the agent to restore.

    ``leader`` is this process: an agent that finds it gone disarms (agent.py).
    """
    env = dict(os.environ)
    env[AGENT_ENV] = json.dumps({
        "dir": str(directory), "settings": settings.to_dict(), "leader": os.getpid(),
        "restore": {name: os.environ.get(name) for name in ("PYTHONPATH", "GLIBC_TUNABLES")},
    })
    env["GLIBC_TUNABLES"] = counters.exact_malloc_tunables(env.get("GLIBC_TUNABLES"))
    # The start-up hook first, then a private path that holds leakscope alone:
    # the command's own interpreter needs no leakscope installed, and never
    # sees the site-packages leakscope's dependencies live in.
    env["PYTHONPATH"] = with_private_path(env.get("PYTHONPATH"), first=[str(STARTUP_DIR)])
    return env


# ------------------------------------------------------------------ run


@dataclass
class Gathered:
    """What one `leakscope run` saw: the processes' logs and how the command ended."""

    watch: Watch
    reason: str  # "exited", "units", "duration", "timeout", "interrupted"
    exit_code: int | None
    seconds: float
    directory: Path


def gather(
    argv: list[str], settings: Settings, limits: RunLimits,
    on_progress: Callable[[Watch, float], None] | None = None,
) -> Gathered:
    """Run the command armed until it ends or a limit is reached; stop it; read every log."""
    preflight(argv)
    # A supervisor stops `leakscope run` with SIGTERM: treat it as Ctrl-C, so
    # the command is stopped in turn and everything gathered is still saved.
    # SIGINT is set too: started in the background by a shell script, this
    # process inherits it ignored, and a `kill -INT` must still stop the run.
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _gather(argv, settings, limits, on_progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _gather(
    argv: list[str], settings: Settings, limits: RunLimits,
    on_progress: Callable[[Watch, float], None] | None,
) -> Gathered:
    sweep_orphaned_run_directories()
    directory = Path(tempfile.mkdtemp(prefix=RUN_DIR_PREFIX))
    (directory / RUNNING_MARKER).touch()
    (directory / LEADER_FILE).write_text(process_identity(os.getpid()) or "")
    watch = Watch(directory, settings.top)
    started = time.monotonic()
    armed = armed_settings(settings, directory)
    # The command's own session: a Ctrl-C at the terminal reaches leakscope
    # only, which stops the command as its supervisor would (_stop).
    try:
        proc = subprocess.Popen(argv, env=agent_env(directory, armed),
                                start_new_session=True, preexec_fn=_die_with(os.getpid()))
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise TargetError(f"{argv[0]}: cannot start: {exc.strerror or exc}") from None
    reason = "exited"
    try:
        reason = _wait(proc, watch, limits, started, on_progress)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        stopped_by_us = proc.poll() is None
        try:
            _stop(proc, watch, limits.stop_timeout)
        except KeyboardInterrupt:
            _kill_group(proc)
        end_units(directory)  # a process that escaped the group kill measures no more
        watch.poll()
    code = proc.returncode
    return Gathered(
        watch=watch, reason=reason,
        exit_code=None if stopped_by_us else code,
        seconds=time.monotonic() - started, directory=directory,
    )


def armed_settings(settings: Settings, directory: Path) -> Settings:
    """What each armed process reads: the locator asked for (``LEAKSCOPE_LOCATOR``), and
    the run directory for its memray window's capture, which goes with the directory.

    With "auto" (the default) a process's window runs memray only when its
    watch saw malloc's bytes grow (``UnitTracedPhase.wants_memray``):
    a memray Tracker in every Celery pool child's window made the Celery
    bench 6.35x plain against 2.15x with tracemalloc alone (BENCHMARKS.md,
    issue 13). ``LEAKSCOPE_LOCATOR=memray`` runs it in every window.
    """
    locator = locator_from_env() if settings.locator == "auto" else settings.locator
    return replace(settings, locator=locator,
                   capture_dir="" if locator == "tracemalloc" else str(directory))


def _die_with(leader: int) -> Callable[[], None] | None:
    """A pre-exec step that has the kernel SIGKILL the command when leakscope dies.

    Without it, a ``kill -9`` of leakscope (or the OOM killer) left the
    command running for ever in its own session, armed and writing. Only
    Linux offers it; elsewhere the agents still disarm (agent.py).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def die_with_leakscope() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != leader:
            os._exit(1)  # leakscope died before the request took effect

    return die_with_leakscope


def process_identity(pid: int) -> str | None:
    """A process as "pid start-time" (Linux), so a reused pid is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            fields = stream.read().rsplit(b")", 1)[1].split()
        return f"{pid} {int(fields[19])}"
    except (OSError, IndexError, ValueError):
        return None


def sweep_orphaned_run_directories() -> None:
    """Remove run directories of a `leakscope run` that was killed before it could.

    Only this user's, only those whose ``leader`` file names a process that
    is gone (same pid and start time): a run still going is never touched.
    """
    if not sys.platform.startswith("linux"):
        return
    uid = os.getuid()
    for directory in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*"):
        try:
            if directory.is_symlink() or directory.stat().st_uid != uid:
                continue
            leader = (directory / LEADER_FILE).read_text().split()
        except OSError:
            continue
        if (len(leader) == 2 and leader[0].isdigit()
                and process_identity(int(leader[0])) != " ".join(leader)):
            shutil.rmtree(directory, ignore_errors=True)


def remove_run_directory(gathered: Gathered) -> None:
    """The run directory goes once the run is read (agents still alive then disarm)."""
    shutil.rmtree(gathered.directory, ignore_errors=True)


def _wait(
    proc: subprocess.Popen, watch: Watch, limits: RunLimits, started: float,
    on_progress: Callable[[Watch, float], None] | None,
) -> str:
    while True:
        watch.poll()
        elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(watch, elapsed)
        if proc.poll() is not None:
            return "exited"
        units = watch.units
        if limits.units is not None and units >= limits.units:
            return "units"
        if limits.duration is not None and elapsed >= limits.duration:
            return "duration"
        if units == 0 and elapsed >= limits.timeout:
            return "timeout"
        time.sleep(POLL_SECONDS)


def _stop(proc: subprocess.Popen, watch: Watch, stop_timeout: float) -> None:
    """SIGTERM to the main process (it stops its own pool), then the group if it must."""
    if proc.poll() is None:
        # First the marker the agents read at each unit's end: what a worker
        # frees as it shuts down (connections, prefetched messages) is not a
        # unit's, and would cut every earlier floor of the series.
        end_units(watch.directory)
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
    # Pool children that outlive their parent get a moment to save, then go.
    deadline = time.monotonic() + CHILDREN_GRACE
    while time.monotonic() < deadline:
        watch.poll()
        if all(log.finished for log in watch.processes) or not _group_alive(proc.pid):
            break
        time.sleep(POLL_SECONDS)
    _kill_group(proc)


def end_units(directory: Path) -> None:
    """No unit counts from now on (agents stat the marker at each unit's end)."""
    try:
        (directory / RUNNING_MARKER).unlink()
    except OSError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


# ------------------------------------------------------------- results


def process_run(log: ProcessLog, settings: Settings) -> Run:
    """One process's log as an analysed Run, with its ``process`` record."""
    from leakscope.analysis import analyse

    assert log.assembler is not None
    assembler = log.assembler
    run = assembler.run
    run.settings = settings.to_dict()
    run.settings.pop("args", None)
    run.settings.pop("capture_dir", None)
    # Watched processes (--sample auto or K) measure untraced units first.
    watched = any(loop.phase == "detect" for loop in run.loops)
    run.mode = "fast" if watched else "full"
    run.unit = log.process.get("unit") or "unit"
    if log.unreadable_lines:
        log.process["unreadable_lines"] = log.unreadable_lines
    assembler.finish()
    run.finished_at = now_iso()
    if run.measured:
        analyse(run)
    else:
        run.verdict = Verdict(
            leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
            confidence=0.0,
            summary=(f"Did no {run.unit}s of its own ({len(run.loops)} warm-up)."
                     if run.loops else f"Did no {run.unit}s of its own."),
        )
        run.observations["idle"] = True
    return run


def raise_for_nothing_done(gathered: Gathered, argv: list[str], timeout: float) -> None:
    """No unit anywhere: say why in one line (the command's own output is just above)."""
    watch = gathered.watch
    if watch.units > 0 or gathered.reason == "interrupted":
        return
    name = os.path.basename(argv[0])
    if not watch.processes:
        refused = [log.refused for log in watch.logs.values() if log.refused]
        if refused:
            raise TargetError(f"{name}: cannot read its processes' events: {refused[0]}")
        if gathered.exit_code not in (None, 0):
            raise WorkerError(f"{name} exited with code {gathered.exit_code}{OUTPUT_ABOVE}")
        raise TargetError(
            f"{name} started no Python process leakscope could arm (is leakscope "
            f"installed for the Python it runs?)"
        )
    started = ", ".join(log.label() for log in watch.processes)
    if gathered.reason == "timeout":
        raise WorkerError(
            f"no unit of work completed within {timeout:g}s: started {started}; none "
            f"completed a task, job or request{OUTPUT_ABOVE}"
        )
    if gathered.exit_code not in (None, 0):
        raise WorkerError(
            f"{name} exited with code {gathered.exit_code} after {gathered.seconds:.1f}s "
            f"before completing a unit of work{OUTPUT_ABOVE}"
        )
    raise TargetError(
        f"{name} ended after {gathered.seconds:.1f}s without completing a unit of work "
        f"(started {started}): no Celery task, RQ job or WSGI request ran and "
        "leakscope.tick() was never called"
    )
