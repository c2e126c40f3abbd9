"""``[tool.leakscope]`` in pyproject.toml, found from the cwd upward, under command-line options.

A repository's CI should need only ``leakscope check``: the targets, their
budgets and iteration counts live beside the code. Every bad entry is an
error that names the key and the value, because a silently ignored typo in
a CI gate is a gate that does not close.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leakscope.model.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PYPROJECT = "pyproject.toml"
SECTION = "tool.leakscope"
# Keys a [tool.leakscope] table and a target entry share. Spelled as the
# command-line options are; ``max_growth`` is read as ``max-growth``.
SETTING_KEYS = (
    "max-growth", "iterations", "warmup", "frames", "timeout", "memory-limit", "holders",
    "mode",
)
TOP_KEYS = ("targets", *SETTING_KEYS)
TARGET_KEYS = ("target", "args", *SETTING_KEYS)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class CheckSettings:
    """Settings for one target; None means "not set here", so the next layer decides."""

    max_growth: int | None = None
    iterations: int | None = None
    warmup: int | str | None = None
    frames: int | None = None
    timeout: float | None = None
    memory_limit: int | None = None
    holders: bool | None = None
    mode: str | None = None  # "fast" (check's default) or "full"

    def over(self, lower: CheckSettings) -> CheckSettings:
        """These settings, with ``lower``'s filling the gaps."""
        return CheckSettings(**{
            name: value if value is not None else getattr(lower, name)
            for name, value in vars(self).items()
        })


@dataclass
class TargetEntry:
    """One entry of ``targets``: a TARGET with its own arguments and settings."""

    target: str
    args: list[str] = field(default_factory=list)
    settings: CheckSettings = field(default_factory=CheckSettings)


@dataclass
class Config:
    """What pyproject.toml says; ``path`` is None when no file has a [tool.leakscope]."""

    path: Path | None = None
    targets: list[TargetEntry] = field(default_factory=list)
    settings: CheckSettings = field(default_factory=CheckSettings)

    def entry_for(self, target: str) -> TargetEntry | None:
        """The configured entry for a TARGET named on the command line, if there is one."""
        return next((e for e in self.targets if e.target == target), None)


def find_pyproject(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest pyproject.toml from ``start`` upward that has a [tool.leakscope] table.

    Like ruff, a pyproject.toml without our table is passed over, so a
    package's own pyproject.toml inside a monorepo does not hide the
    repository's settings.
    """
    here = Path(start or os.getcwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / PYPROJECT
        if candidate.is_file() and "leakscope" in _read_tool(candidate):
            return candidate
    return None


def load(start: str | os.PathLike[str] | None = None) -> Config:
    """Read [tool.leakscope] from the nearest pyproject.toml that has it."""
    path = find_pyproject(start)
    if path is None:
        return Config()
    return parse(_read_tool(path)["leakscope"], path)


def _read_tool(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as source:
            data = tomllib.load(source)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_shown(path)}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{_shown(path)}: cannot read: {exc.strerror}") from None
    tool = data.get("tool", {})
    return tool if isinstance(tool, dict) else {}


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - another drive on Windows
        return str(path)


def _show(value: Any) -> str:
    """A value as it would be written in TOML, near enough to find it in the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # TOML's inf and nan, where JSON would say Infinity
    return json.dumps(value, default=str)


def parse(table: Any, path: Path) -> Config:
    """Check and convert one [tool.leakscope] table; relative targets are from its file."""
    where = f"{_shown(path)}: [{SECTION}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} = {_show(table)}: expected a table")
    top = _Table(table, TOP_KEYS, where, "")
    targets = []
    raw = top.values.get("targets", [])
    if not isinstance(raw, list):
        raise top.error("targets", "expected a list of targets")
    for index, item in enumerate(raw):
        targets.append(_entry(item, where, f"targets[{index}]", path.parent))
    return Config(path=path, targets=targets, settings=_settings(top))


class _Table:
    """One TOML table's known keys, remembering how each was spelled for error messages."""

    def __init__(self, table: dict[str, Any], known: tuple[str, ...], where: str,
                 prefix: str) -> None:
        self.where = where
        self.prefix = prefix
        self.values: dict[str, Any] = {}
        self.spelled: dict[str, str] = {}
        for key, value in table.items():
            name = key.replace("_", "-")
            if name not in known:
                raise ConfigError(
                    f"{where} {prefix}{key} = {_show(value)}: unknown key "
                    f"(known: {', '.join(known)})"
                )
            self.values[name] = value
            self.spelled[name] = key

    def error(self, name: str, expected: str) -> ConfigError:
        key = self.prefix + self.spelled.get(name, name)
        return ConfigError(f"{self.where} {key} = {_show(self.values.get(name))}: {expected}")


def _entry(item: Any, where: str, prefix: str, base: Path) -> TargetEntry:
    if isinstance(item, str):
        return TargetEntry(target=_resolve_target(item, base))
    if not isinstance(item, dict):
        raise ConfigError(
            f"{where} {prefix} = {_show(item)}: expected a TARGET string or a table "
            "with a 'target' key"
        )
    table = _Table(item, TARGET_KEYS, where, f"{prefix}.")
    target = table.values.get("target")
    if not isinstance(target, str) or not target.strip():
        raise table.error(
            "target", "expected a TARGET (worker.py, worker.py:func or package.module:func)"
        )
    args = table.values.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise table.error("args", "expected a list of strings")
    return TargetEntry(
        target=_resolve_target(target, base), args=list(args), settings=_settings(table),
    )


def _resolve_target(text: str, base: Path) -> str:
    """A file target relative to the pyproject.toml's directory, shown relative to the cwd.

    So ``leakscope check`` finds the same files from any subdirectory, as
    coverage.py reads paths in its config relative to the config file.
    Module targets (``package.module:func``) are left as they are.
    """
    location, suffix = text, ""
    head, sep, tail = text.rpartition(":")
    if sep and head and _IDENTIFIER.match(tail):
        location, suffix = head, f":{tail}"
    if not (location.endswith(".py") or "/" in location or os.sep in location):
        return text
    path = Path(location)
    if path.is_absolute():
        return text
    return _shown(base / path) + suffix


def _settings(table: _Table) -> CheckSettings:
    """The table's settings, each checked by the rule the command line and plugin share."""
    from leakscope.model.settings import SettingError, check_setting

    result = CheckSettings()
    for key in SETTING_KEYS:
        if key not in table.values:
            continue
        name = key.replace("-", "_")
        try:
            setattr(result, name, check_setting(name, table.values[key]))
        except SettingError as exc:
            raise table.error(key, exc.expected) from None
    return result
