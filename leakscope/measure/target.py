"""TARGET to a Worker: a file with iteration(), file.py:func, module:func, or a tick script.

``parse`` runs in the leakscope command and does the pre-flight checks that
need no import (the file exists, is readable, compiles, follows the
contract). ``load`` runs in the traced process and imports the worker the
way ``python worker.py`` would: its directory first on ``sys.path``, its
arguments in ``sys.argv``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import os
import re
import runpy
import sys
import tokenize
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from leakscope.model.errors import TargetError

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass
class TargetSpec:
    """What TARGET names. ``kind`` is ``iteration``, ``function`` or ``script``."""

    text: str
    kind: str
    path: str | None = None
    module: str | None = None
    function: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "script":
            return self.text
        where = self.path if self.path else self.module
        return f"{where}:{self.function}"


@dataclass
class Worker:
    """The callables one run needs. A script worker has ``run_script`` instead."""

    iteration: Callable[[], object] | None = None
    setup: Callable[[], object] | None = None
    teardown: Callable[[], object] | None = None
    run_script: Callable[[], object] | None = None


def parse(text: str) -> TargetSpec:
    """Split TARGET and check what can be checked without running anything."""
    location, function = text, None
    head, sep, tail = text.rpartition(":")
    if sep and _IDENTIFIER.match(tail) and head:
        location, function = head, tail
    looks_like_file = location.endswith(".py") or os.sep in location or os.path.exists(location)
    if not looks_like_file:
        if function is None:
            raise TargetError(
                f"{text}: no such file (name a worker file, file.py:func or module:func)"
            )
        if not _MODULE.match(location):
            raise TargetError(f"{text}: {location!r} is neither a file nor a module name")
        return TargetSpec(text=text, kind="function", module=location, function=function)
    source = _read_source(location)
    tree = _compile(location, source)
    if function is not None:
        return TargetSpec(text=text, kind="function", path=location, function=function)
    if _defines(tree, "iteration"):
        return TargetSpec(text=text, kind="iteration", path=location, function="iteration")
    if not _mentions_tick(tree):
        raise TargetError(
            f"{location}: defines no iteration() function and never calls leakscope.tick()"
        )
    return TargetSpec(text=text, kind="script", path=location)


def _read_source(location: str) -> bytes:
    path = Path(location)
    if not path.exists():
        if path.is_symlink():
            raise TargetError(
                f"{location}: dangling symlink (to {os.readlink(path)}), no such file"
            )
        raise TargetError(f"{location}: no such file")
    if path.is_dir():
        raise TargetError(f"{location}: is a directory, not a worker file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TargetError(f"{location}: cannot read worker: {exc.strerror or exc}") from None


def _compile(location: str, source: bytes) -> ast.Module:
    _decode(location, source)
    try:
        return ast.parse(source, filename=location)
    except SyntaxError as exc:
        if not exc.lineno:  # null bytes, a bad coding cookie: no line to name
            raise TargetError(f"{location}: cannot compile worker: {exc.msg}") from None
        raise TargetError(f"{location}:{exc.lineno}: syntax error: {exc.msg}") from None
    except ValueError as exc:  # null bytes on older Pythons
        raise TargetError(f"{location}: cannot compile worker: {exc}") from None


def _decode(location: str, source: bytes) -> None:
    """Undecodable bytes get their own message: the file is likely not Python at all."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
    except SyntaxError as exc:  # an unknown or contradictory coding cookie
        raise TargetError(f"{location}: cannot decode worker: {exc.msg}") from None
    try:
        source.decode(encoding)
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        raise TargetError(
            f"{location}:{line}: not valid {encoding} text (byte 0x{source[exc.start]:02x}); "
            "is this a Python source file?"
        ) from None


def _defines(tree: ast.Module, name: str) -> bool:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def _mentions_tick(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "tick":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "tick":
            return True
    return False


# ---------------------------------------------------------------- in the child


def load(spec: TargetSpec, args: list[str]) -> Worker:
    """Import the worker in this process. Errors from its own code propagate."""
    if spec.path is not None:
        path = os.path.abspath(spec.path)
        sys.argv = [spec.path, *args]
        sys.path.insert(0, os.path.dirname(path))
        if spec.kind == "script":
            return Worker(run_script=lambda: runpy.run_path(path, run_name="__main__"))
        module = _import_file(path)
    else:
        assert spec.module is not None
        sys.argv = [spec.module, *args]
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(spec.module)
        except ModuleNotFoundError as exc:
            # Only the named module (or a parent package) missing is a bad
            # TARGET; a missing dependency inside the worker is the worker's.
            if exc.name and (spec.module + ".").startswith(exc.name + "."):
                raise TargetError(f"{spec.text}: no module named {exc.name!r}") from None
            raise
    assert spec.function is not None
    iteration = getattr(module, spec.function, None)
    if iteration is None:
        where = spec.path or spec.module
        raise TargetError(f"{where}: has no function {spec.function}()")
    if not callable(iteration):
        raise TargetError(f"{spec.label}: is not callable")
    return Worker(
        iteration=iteration,
        setup=_optional(module, "setup"),
        teardown=_optional(module, "teardown"),
    )


def _optional(module: ModuleType, name: str) -> Callable[[], object] | None:
    value = module.__dict__.get(name)
    return value if callable(value) else None


def _import_file(path: str) -> ModuleType:
    """Import a file under its own name, so holder paths read ``worker.Bus.x``."""
    stem = Path(path).stem
    name = stem if _IDENTIFIER.match(stem) and stem not in sys.modules else "__leakscope_worker__"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"{path}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
