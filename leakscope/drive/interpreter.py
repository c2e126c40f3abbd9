"""Which Python runs the measured worker, and how it reaches leakscope's in-process side.

leakscope is installed as a tool of its own (pipx, uv tool) and pointed at an
app that has its own environment: the worker must run under the app's
interpreter with the app's pinned libraries, and must load nothing from
leakscope's environment. So the measured process gets, on ``PYTHONPATH``, a
private directory that holds one entry, a link to the ``leakscope`` package,
and never the site-packages leakscope itself was installed in (where typer,
rich, jinja2 and their pins live). This module runs in the tool's process only.
"""

from __future__ import annotations

import atexit
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import leakscope
from leakscope.model.errors import UsageError

OLDEST = (3, 10)
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
PACKAGE_DIR = Path(leakscope.__file__).resolve().parent


@dataclass(frozen=True)
class Interpreter:
    """The worker's Python: its path, version, and why it was chosen (printed once)."""

    path: str
    version: str
    chosen_by: str

    def describe(self) -> str:
        return f"worker Python {self.version}: {self.path} ({self.chosen_by})"


def choose(explicit: str | None, environ: dict[str, str] | None = None,
           cwd: Path | None = None) -> Interpreter:
    """``--python``, else ``$VIRTUAL_ENV``'s, else ``./.venv/bin/python``, else our own."""
    environ = dict(os.environ) if environ is None else environ
    cwd = Path.cwd() if cwd is None else cwd
    if explicit:
        return _probe(explicit, "--python")
    venv = environ.get("VIRTUAL_ENV")
    if venv:
        candidate = _venv_python(Path(venv))
        if candidate is not None:
            return _probe(str(candidate), "$VIRTUAL_ENV")
    candidate = _venv_python(cwd / ".venv")
    if candidate is not None:
        return _probe(str(candidate), "./.venv")
    return Interpreter(sys.executable, _own_version(), "leakscope's own")


def _venv_python(venv: Path) -> Path | None:
    for name in ("bin/python", "Scripts/python.exe"):
        candidate = venv / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _own_version() -> str:
    return platform.python_version()


def _probe(path: str, chosen_by: str) -> Interpreter:
    """Run the interpreter once to learn its version; refuse what cannot be a worker's."""
    resolved = shutil.which(path) if os.sep not in path else path
    if resolved is None or not os.path.isfile(resolved):
        raise UsageError(f"{chosen_by} {path}: no such interpreter")
    if not os.access(resolved, os.X_OK):
        raise UsageError(f"{chosen_by} {path}: not executable")
    if os.path.realpath(resolved) == os.path.realpath(sys.executable):
        return Interpreter(resolved, _own_version(), chosen_by)
    try:
        done = subprocess.run(
            [resolved, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"{chosen_by} {path}: cannot run it ({exc})") from None
    version = done.stdout.strip()
    parts = version.split(".")
    if done.returncode != 0 or len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise UsageError(f"{chosen_by} {path}: not a Python interpreter")
    if (int(parts[0]), int(parts[1])) < OLDEST:
        raise UsageError(
            f"{chosen_by} {path}: Python {version} is older than "
            f"{OLDEST[0]}.{OLDEST[1]}, the oldest leakscope measures"
        )
    return Interpreter(resolved, version, chosen_by)


_private: Path | None = None
_PREFIX = "leakscope-path-"


def _remove_stale() -> None:
    """Private paths left by a leakscope that was killed (SIGKILL skips atexit)."""
    try:
        entries = list(Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or entry.lstat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def private_path() -> str:
    """A directory whose only entry is the ``leakscope`` package, for a measured PYTHONPATH.

    One per leakscope process, removed when it exits. A link, not a copy: the
    worker imports the very modules the tool runs.
    """
    global _private
    if _private is None or not _private.exists():
        _remove_stale()
        directory = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        (directory / "leakscope").symlink_to(PACKAGE_DIR, target_is_directory=True)
        atexit.register(shutil.rmtree, directory, True)
        _private = directory
    return str(_private)


def with_private_path(pythonpath: str | None, first: list[str] | None = None) -> str:
    """``PYTHONPATH`` for a measured process: ``first``, our private dir, the user's entries.

    Ours comes before the user's entries so that a different leakscope the app
    may have installed never answers for the in-process side of this one; the
    private dir holds the name ``leakscope`` and nothing else.
    """
    paths = [p for p in (pythonpath or "").split(os.pathsep) if p]
    own = private_path()
    return os.pathsep.join((first or []) + [own] + [p for p in paths if p != own])
