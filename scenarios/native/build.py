"""Build scenarios/native/leakext.c for the interpreter that imports this file.

Stand-alone and standard library only (``sysconfig`` and the system's C
compiler, no setuptools), because the scenario workers call it from the
measured process, under whatever Python runs the worker. The result is cached
in ``.leakscope-build/`` at the repository's root (gitignored), keyed by the
source's hash and the interpreter's extension suffix, so a second build is a
file lookup. ``python scenarios/native/build.py`` builds and prints the path.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "leakext.c"
BUILD_ROOT = HERE.parent.parent / ".leakscope-build"


class BuildError(RuntimeError):
    """No C compiler or no Python headers: the native scenarios cannot run here."""


def build_dir() -> Path:
    """The directory that holds this interpreter's build of leakext (built if missing)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = BUILD_ROOT / f"{digest}-{suffix.strip('.').replace('.', '-')}"
    module = target / f"leakext{suffix}"
    if module.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if not compiler:
        raise BuildError("no C compiler (cc or gcc) on PATH")
    if not (Path(include) / "Python.h").exists():
        raise BuildError(f"no Python headers at {include}")
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f"leakext.{os.getpid()}.tmp"
    command = [compiler, "-shared", "-fPIC", "-O1", "-g", f"-I{include}", str(SOURCE),
               "-o", str(partial)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    os.replace(partial, module)  # atomic: parallel builders never see half a file
    return target


def load() -> types.ModuleType:
    """Import leakext, building it first when needed."""
    path = str(build_dir())
    if path not in sys.path:
        sys.path.insert(0, path)
    import leakext

    return leakext


if __name__ == "__main__":
    print(build_dir())
