"""`leakscope attach PID`: measure a Python process that is already running, then leave.

The tool side. It checks first that attaching can work (one line and exit 2
when not), then has the target run a short bootstrap: through
``sys.remote_exec`` (PEP 768) where both sides run CPython 3.14+, else through
gdb, which stops the process, waits for a thread to reach a safe point (the
entry of ``PyEval_SaveThread``: the thread holds the GIL and is about to block,
so no allocator or interpreter lock is half-taken), calls
``PyGILState_Ensure``, ``PyRun_SimpleString`` and ``PyGILState_Release`` there,
puts every register back and detaches. The bootstrap puts a private directory
holding only the ``leakscope`` package at the front of ``sys.path`` and starts
``leakscope.drive.attached``, which writes the same events file as an armed process
of ``leakscope run`` into a run directory; this side reads it with
``launcher.ProcessLog``, so the run file is that of ``leakscope run``.

The debugger's calls are made by hand (stack, registers, a breakpoint at the
program's entry point as the return address) rather than with gdb's ``call``:
gdb's own inferior calls save and restore the full extended register state,
which fails on CPUs whose state gdb cannot write (AMX), and would then leave
the process with a half-made call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leakscope.drive import launcher
from leakscope.drive.agent import RUNNING_MARKER
from leakscope.drive.interpreter import OLDEST, private_path
from leakscope.model.errors import TargetError, UsageError, WorkerError
from leakscope.model.settings import Settings

DEFAULT_UNITS = 200
DEFAULT_DURATION = 60.0
# Without a framework's unit of work, one unit is this many seconds of the process's life.
DEFAULT_SLICE = 0.25
# How long a thread of the target gets to reach a safe point (an idle worker
# blocks in select() with a timeout; a busy one releases the GIL often).
SAFE_POINT_TIMEOUT = 30.0
# How long the bootstrap gets to say hello, and the process to save its end.
HELLO_TIMEOUT = 30.0
FINAL_TIMEOUT = 60.0
CAP_SYS_PTRACE = 19
AT_ENTRY = 9


# ------------------------------------------------------------ pre-flight


@dataclass(frozen=True)
class Target:
    pid: int
    version: tuple[int, int]
    exe: str
    entry: int  # the program's entry point (auxv AT_ENTRY): never run twice


def preflight(pid_text: str, proc: str = "/proc") -> Target:
    """Everything that would stop an attach, checked before the process is touched."""
    if not pid_text.isdigit() or int(pid_text) <= 0:
        raise UsageError(f"attach: {pid_text!r} is not a process id")
    pid = int(pid_text)
    base = Path(proc) / str(pid)
    try:
        owner = base.stat().st_uid
        status = (base / "status").read_text()
    except FileNotFoundError:
        raise UsageError(f"attach: no process with pid {pid}") from None
    except OSError as exc:
        raise UsageError(f"attach: cannot read pid {pid}: {exc.strerror}") from None
    check_owner(pid, owner, os.getuid(), os.getuid() == 0)
    try:
        exe = os.readlink(base / "exe")
        maps = (base / "maps").read_text()
        auxv = (base / "auxv").read_bytes()
    except OSError as exc:
        raise UsageError(f"attach: cannot read pid {pid}: {exc.strerror}") from None
    version = version_from(maps, exe)
    if version is None:
        raise UsageError(f"attach: pid {pid} is not a Python process ({exe})")
    check_version(pid, version)
    if not _remote_exec_fits(version):
        if shutil.which("gdb") is None:
            raise UsageError(
                "attach: gdb not found: install it (Debian/Ubuntu: apt-get install gdb); "
                f"Python {version[0]}.{version[1]} has no sys.remote_exec"
            )
        reason = ptrace_refusal(_read(Path("/proc/sys/kernel/yama/ptrace_scope")),
                                _has_cap_ptrace(), _is_descendant(pid, proc))
        if reason is not None:
            raise UsageError(f"attach: ptrace not permitted: {reason}")
        check_tracer(pid, status)
    return Target(pid=pid, version=version, exe=exe, entry=_entry_point(auxv))


_LIB = re.compile(r"libpython(\d+)\.(\d+)")
_EXE = re.compile(r"^python(\d+)\.(\d+)")


def version_from(maps: str, exe: str) -> tuple[int, int] | None:
    """CPython's major.minor from the libpython it maps, else its executable's name."""
    match = _LIB.search(maps)
    if match is None:
        match = _EXE.match(os.path.basename(exe).replace(" (deleted)", ""))
    if match is None and os.path.basename(exe).startswith("python"):
        return _version_by_running(exe)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _version_by_running(exe: str) -> tuple[int, int] | None:
    """``python3`` with no version in its name: ask it (it is a Python, we run nothing else)."""
    try:
        done = subprocess.run([exe, "-I", "-c", "import sys; print(*sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
        major, minor = done.stdout.split()
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def check_version(pid: int, version: tuple[int, int]) -> None:
    if version < OLDEST:
        raise UsageError(
            f"attach: pid {pid} runs Python {version[0]}.{version[1]}, older than "
            f"{OLDEST[0]}.{OLDEST[1]}, the oldest leakscope measures"
        )


def check_owner(pid: int, owner: int, uid: int, root: bool) -> None:
    if owner != uid and not root:
        raise UsageError(
            f"attach: pid {pid} is another user's process (uid {owner}); run leakscope "
            "as that user"
        )


def check_tracer(pid: int, status: str) -> None:
    match = re.search(r"^TracerPid:\s*(\d+)", status, re.M)
    if match and match.group(1) != "0":
        raise UsageError(f"attach: pid {pid} is already traced by pid {match.group(1)} "
                         "(a debugger or profiler): detach it first")


def ptrace_refusal(scope: str | None, cap_ptrace: bool, descendant: bool) -> str | None:
    """Why Yama's ptrace_scope (or its absence of a capability) forbids the attach, or None."""
    if scope is None or scope.strip() in ("", "0"):
        return None
    level = scope.strip()
    if level == "1" and (cap_ptrace or descendant):
        return None
    if level == "2" and cap_ptrace:
        return None
    fix = {
        "1": "only a parent may trace its children: run leakscope as root, give it "
             "CAP_SYS_PTRACE, or set it to 0",
        "2": "only CAP_SYS_PTRACE may trace: run leakscope as root or give it CAP_SYS_PTRACE",
        "3": "no process may be traced until reboot",
    }.get(level, "unknown level")
    return f"/proc/sys/kernel/yama/ptrace_scope is {level} ({fix})"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _has_cap_ptrace() -> bool:
    status = _read(Path("/proc/self/status")) or ""
    match = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
    return bool(match and int(match.group(1), 16) >> CAP_SYS_PTRACE & 1)


def _is_descendant(pid: int, proc: str) -> bool:
    me = os.getpid()
    for _ in range(64):
        try:
            stat = (Path(proc) / str(pid) / "stat").read_bytes()
            pid = int(stat.rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == me:
            return True
        if pid <= 1:
            return False
    return False


def _entry_point(auxv: bytes) -> int:
    for offset in range(0, len(auxv) - 15, 16):
        key = int.from_bytes(auxv[offset:offset + 8], "little")
        if key == AT_ENTRY:
            return int.from_bytes(auxv[offset + 8:offset + 16], "little")
    return 0


def _remote_exec_fits(version: tuple[int, int]) -> bool:
    """PEP 768's ``sys.remote_exec``: both this Python and the target's must be 3.14+ and
    of the same minor version (the debug offsets are read by version)."""
    return hasattr(sys, "remote_exec") and version >= (3, 14) and \
        version == sys.version_info[:2]


# ------------------------------------------------------------ injection


@dataclass
class Injection:
    """How the bootstrap got in: the route and how long the process was held."""

    route: str  # "gdb" or "sys.remote_exec"
    seconds: float  # the debugger's whole time, attach to detach
    stopped_seconds: float  # the whole process stopped (attach, set-up, detach)
    held_seconds: float  # the thread that ran the bootstrap, from its safe point to detach


def inject(target: Target, script: Path, work: Path,
           remote_exec: Callable[[int, str], None] | None = None,
           wait: float = SAFE_POINT_TIMEOUT) -> Injection:
    """Have the target run ``script`` once, in one of its threads, and return at once."""
    if remote_exec is None and _remote_exec_fits(target.version):
        remote_exec = sys.remote_exec  # type: ignore[attr-defined]
    if remote_exec is not None:
        started = time.monotonic()
        try:
            remote_exec(target.pid, str(script))
        except (OSError, RuntimeError) as exc:
            raise TargetError(f"attach: sys.remote_exec failed for pid {target.pid}: {exc}") \
                from None
        seconds = time.monotonic() - started
        return Injection("sys.remote_exec", seconds, 0.0, 0.0)
    return _inject_gdb(target, script, work, wait)


def bootstrap_line(script: Path) -> str:
    """What ``PyRun_SimpleString`` runs in ``__main__``: it leaves no name there, and its
    file is closed (an unclosed one would warn, and register the warning in ``__main__``)."""
    path = repr(str(script))
    return (f"exec(compile((lambda f: (f.read(), f.close())[0])(open({path}, 'rb')), "
            f"{path}, 'exec'), {{'__name__': '__leakscope_attach__'}})")


def _inject_gdb(target: Target, script: Path, work: Path, wait: float) -> Injection:
    if not target.entry:
        raise TargetError(f"attach: pid {target.pid}: no entry point in its auxv")
    line = bootstrap_line(script).encode() + b"\0"
    result_path = work / "gdb-result.json"
    calling = work / "gdb-calling"
    params = {"entry": target.entry, "code": line.hex(), "result": str(result_path),
              "calling": str(calling)}
    gdb_script = work / "inject.py"
    gdb_script.write_text(f"PARAMS = {json.dumps(params)}\n{GDB_SCRIPT}")
    command = ["gdb", "-batch", "-nx", "-q", "-p", str(target.pid), "-x", str(gdb_script)]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    interrupted = False
    try:
        output, _ = proc.communicate(timeout=wait)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        output = _stop_gdb(proc, calling)
    if interrupted:
        raise KeyboardInterrupt
    seconds = time.monotonic() - started
    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError):
        result = {"error": "gdb ended before it could run its script"}
    if result.get("no_safe_point"):
        raise TargetError(
            f"attach: no thread of pid {target.pid} reached a safe point (a blocking call) "
            f"within {wait:g}s; gdb detached, nothing was changed (a pure-Python busy loop "
            "never blocks: try again when it waits, or raise --wait)"
        )
    if result.get("error") or result.get("status") != 0:
        why = result.get("error") or f"the bootstrap returned {result.get('status')}"
        last = [ln for ln in (output or "").splitlines() if ln.strip()][-1:]
        raise TargetError(f"attach: could not inject into pid {target.pid}: {why}"
                          + (f" (gdb: {last[0][:200]})" if last and not result.get("error")
                             else ""))
    return Injection("gdb", seconds, float(result.get("stopped", 0.0)),
                     float(result.get("held", 0.0)))


def _stop_gdb(proc: subprocess.Popen, calling: Path) -> str:
    """End gdb's wait for a safe point; never its calls, once they have begun.

    Interrupted while it waits, the script puts the breakpoint away and
    detaches. Once a thread runs the bootstrap, stopping it halfway would leave
    the interpreter with a half-made call: gdb then gets to finish (Ctrl-C
    again during that wait still waits).
    """
    if not calling.exists():
        proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    while True:
        try:
            output, _ = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            return output or ""
        except KeyboardInterrupt:
            continue
        except subprocess.TimeoutExpired:
            if calling.exists():
                deadline = time.monotonic() + 60
                continue
            proc.kill()  # a dead tracer: the kernel detaches the process
            output, _ = proc.communicate()
            return output or ""


# Runs inside gdb's own Python (gdb -x). Every register the calls change is put
# back; whatever fails, the breakpoints go and the process is detached.
GDB_SCRIPT = r'''
import json, time
import gdb

REGS = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10",
        "r11", "r12", "r13", "r14", "r15", "rip", "eflags"]
result = {}
began = time.monotonic()
stopped = 0.0
held_from = None


def run(command):
    return gdb.execute(command, to_string=True)


def value(expr):
    return int(gdb.parse_and_eval(expr)) & 0xFFFFFFFFFFFFFFFF


def address(name):
    return value("(long)&" + name)


def call(function, argument, entry, stack):
    """function(argument) in the stopped thread; its return value (rax)."""
    sp = stack - 8
    gdb.selected_inferior().write_memory(sp, entry.to_bytes(8, "little"))
    run("set $rsp = %d" % sp)
    run("set $rdi = %d" % argument)
    run("set $rax = 0")
    run("set $pc = %d" % function)
    for _ in range(100):  # a stop elsewhere (a stray interrupt): the call goes on
        run("continue")
        if value("$pc") == entry:
            break
    if value("$pc") != entry:
        raise RuntimeError("the call did not come back (stopped at %#x)" % value("$pc"))
    return value("$rax")


def main():
    global stopped, held_from
    run("set pagination off")
    run("set confirm off")
    run("handle all nostop noprint pass")
    ensure = address("PyGILState_Ensure")
    simple = address("PyRun_SimpleString")
    release = address("PyGILState_Release")
    safe = address("PyEval_SaveThread")
    entry = PARAMS["entry"]
    stopped += time.monotonic() - began
    point = gdb.Breakpoint("*%d" % safe, internal=True)
    try:
        run("continue")
    finally:
        point.delete()
    if value("$pc") != safe:
        result["no_safe_point"] = True
        raise RuntimeError("no thread reached a safe point (interrupted)")
    held_from = time.monotonic()
    open(PARAMS["calling"], "w").close()
    saved = {reg: value("$" + reg) for reg in REGS}
    back = gdb.Breakpoint("*%d" % entry, internal=True)
    try:
        rsp = saved["rsp"]
        code = bytes.fromhex(PARAMS["code"])
        text = (rsp - 4096 - len(code)) & ~0xF
        gdb.selected_inferior().write_memory(text, code)
        stack = (text - 512) & ~0xF
        state = call(ensure, 0, entry, stack) & 0xFFFFFFFF
        status = call(simple, text, entry, stack) & 0xFFFFFFFF
        call(release, state, entry, stack)
        result["status"] = status - (1 << 32) if status & 0x80000000 else status
    finally:
        back.delete()
        for reg in REGS:
            run("set $%s = %d" % (reg, saved[reg]))


try:
    main()
except BaseException as exc:
    result["error"] = "%s: %s" % (type(exc).__name__, exc)
finally:
    detach_started = time.monotonic()
    try:
        gdb.execute("delete")
    except BaseException:
        pass
    try:
        gdb.execute("detach")
    except BaseException as exc:
        result.setdefault("error", "detach failed: %s" % exc)
    now = time.monotonic()
    result["stopped"] = stopped + (now - detach_started)
    result["held"] = now - held_from if held_from is not None else 0.0
    with open(PARAMS["result"], "w") as stream:
        json.dump(result, stream)
    gdb.execute("quit")
'''


BOOTSTRAP = '''\
import sys
_private = {private!r}
_cached = {{name: set(getattr(sys.modules.get("re"), name, ()))
           for name in ("_cache", "_cache2")}}
_aside = {{name: module for name, module in sys.modules.items()
          if name == "leakscope" or name.startswith("leakscope.")}}
for _name in _aside:
    del sys.modules[_name]
sys.path.insert(0, _private)
try:
    import leakscope.drive.attached
    leakscope.drive.attached.start({config!r}, _private, _aside, _cached)
except BaseException as _exc:
    with open({error!r}, "w") as _stream:
        _stream.write("%s: %s" % (type(_exc).__name__, _exc))
    for _name in [n for n in sys.modules if n == "leakscope" or n.startswith("leakscope.")]:
        del sys.modules[_name]
    sys.modules.update(_aside)
    if _private in sys.path:
        sys.path.remove(_private)
'''


# ------------------------------------------------------------ the span


@dataclass
class Limits:
    units: int | None = DEFAULT_UNITS
    duration: float | None = DEFAULT_DURATION
    time_slice: float = DEFAULT_SLICE
    safe_point_wait: float = SAFE_POINT_TIMEOUT


@dataclass
class Attached:
    """What one attach saw: the processes' logs, how the span ended, how each got in."""

    watch: launcher.Watch
    reason: str  # "units", "duration", "exited", "interrupted"
    seconds: float
    directory: Path
    injections: dict[int, Injection]
    targets: list[Target]
    # pids that ended during the span (a recycled pool child, a killed worker)
    ended: list[int]


def children(pid_text: str, proc: str = "/proc") -> list[Target]:
    """Every Python child of a pre-fork master (Celery, gunicorn), each checked as one."""
    master = preflight(pid_text, proc)
    found: list[int] = []
    for task in sorted((Path(proc) / str(master.pid) / "task").glob("*")):
        try:
            found.extend(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    targets = []
    for pid in found:
        try:
            targets.append(preflight(str(pid), proc))
        except UsageError as exc:
            if "not a Python process" in exc.message or "no process" in exc.message:
                continue  # a shell or helper child, or one that just ended
            raise
    if not targets:
        raise UsageError(f"attach: pid {master.pid} has no Python child (--children attaches "
                         "to a pre-fork master's pool); attach to it without --children")
    return targets


def gather(targets: list[Target], settings: Settings, limits: Limits,
           on_progress: Callable[[launcher.Watch, float], None] | None = None) -> Attached:
    """Inject into each, read the events until the span ends, have each leave, read the end."""
    previous = {signum: signal.signal(signum, _interrupt)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    directory = Path(tempfile.mkdtemp(prefix=launcher.RUN_DIR_PREFIX))
    try:
        return _gather(targets, settings, limits, on_progress, directory)
    except BaseException:
        launcher.end_units(directory)  # any process already armed leaves at once
        shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _gather(targets: list[Target], settings: Settings, limits: Limits,
            on_progress: Callable[[launcher.Watch, float], None] | None,
            directory: Path) -> Attached:
    (directory / RUNNING_MARKER).touch()
    (directory / launcher.LEADER_FILE).write_text(launcher.process_identity(os.getpid()) or "")
    config = {"dir": str(directory), "settings": settings.to_dict(), "leader": os.getpid(),
              "time_slice": limits.time_slice}
    (directory / "config.json").write_text(json.dumps(config))
    # The target may run as a service user with its own umask: it reads these files.
    os.chmod(directory, 0o755)
    watch = launcher.Watch(directory, settings.top)
    injections: dict[int, Injection] = {}
    reason = "exited"
    started = time.monotonic()
    try:
        for target in targets:
            work = directory / f"inject-{target.pid}"
            work.mkdir()
            script = work / "boot.py"
            script.write_text(BOOTSTRAP.format(private=private_path(),
                                               config=str(directory / "config.json"),
                                               error=str(work / "boot-error")))
            injections[target.pid] = inject(target, script, work, wait=limits.safe_point_wait)
            _wait_hello(target, watch, work / "boot-error")
        started = time.monotonic()
        reason = _wait(targets, watch, limits, started, on_progress)
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        launcher.end_units(directory)  # each process leaves at its next look (attached.py)
        _wait_final(targets, watch)
    ended = [target.pid for target in targets if not _alive(target.pid)]
    return Attached(watch=watch, reason=reason, seconds=time.monotonic() - started,
                    directory=directory, injections=injections, targets=targets, ended=ended)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has gone as far as measuring goes
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return stat.rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _wait_hello(target: Target, watch: launcher.Watch, error_path: Path) -> None:
    deadline = time.monotonic() + HELLO_TIMEOUT
    while True:
        watch.poll()
        if any(log.process.get("pid") == target.pid for log in watch.processes):
            return
        if error_path.exists():
            raise TargetError(f"attach: leakscope could not start in pid {target.pid}: "
                              f"{error_path.read_text().strip()[:300]}")
        if not _alive(target.pid):
            raise WorkerError(f"attach: pid {target.pid} ended before leakscope started in it")
        if time.monotonic() > deadline:
            raise TargetError(f"attach: pid {target.pid} ran the bootstrap but leakscope "
                              f"did not start within {HELLO_TIMEOUT:g}s")
        time.sleep(0.05)


def _wait(targets: list[Target], watch: launcher.Watch, limits: Limits, started: float,
          on_progress: Callable[[launcher.Watch, float], None] | None) -> str:
    """Until the units or the duration are reached, or every process has ended."""
    while True:
        watch.poll()
        elapsed = time.monotonic() - started
        if on_progress is not None:
            on_progress(watch, elapsed)
        if not any(_alive(target.pid) for target in targets):
            return "exited"
        if limits.units is not None and watch.units >= limits.units:
            return "units"
        if limits.duration is not None and elapsed >= limits.duration:
            return "duration"
        time.sleep(launcher.POLL_SECONDS / 5)


def _wait_final(targets: list[Target], watch: launcher.Watch) -> None:
    """Each process writes its end (the last holder walk) and leaves; wait for those lines."""
    deadline = time.monotonic() + FINAL_TIMEOUT
    while time.monotonic() < deadline:
        watch.poll()
        alive = {target.pid for target in targets if _alive(target.pid)}
        if all(log.finished or log.process.get("pid") not in alive for log in watch.processes):
            break
        time.sleep(0.05)
    watch.poll()


def remove_run_directory(attached: Attached) -> None:
    shutil.rmtree(attached.directory, ignore_errors=True)


def describe(attached: Attached) -> dict[str, Any]:
    """The run's ``observations["attach"]``: how each process was reached and held."""
    injections: list[dict[str, Any]] = [
        {"pid": pid, "route": injection.route,
         "debugger_seconds": round(injection.seconds, 4),
         "stopped_seconds": round(injection.stopped_seconds, 4),
         "held_seconds": round(injection.held_seconds, 4)}
        for pid, injection in attached.injections.items()
    ]
    first = injections[0] if injections else {}
    return {
        "pids": [target.pid for target in attached.targets],
        "python": sorted({f"{t.version[0]}.{t.version[1]}" for t in attached.targets}),
        "route": first.get("route"),
        "stopped_seconds": max((i["stopped_seconds"] for i in injections), default=None),
        "held_seconds": max((i["held_seconds"] for i in injections), default=None),
        "injections": injections,
        "stopped_because": attached.reason,
        "ended_during_span": attached.ended,
        "seconds": round(attached.seconds, 2),
    }
