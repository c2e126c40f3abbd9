"""From the command line's text to checked values: the rules are settings.check_setting's."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leakscope.model import runfile
from leakscope.model.errors import UsageError
from leakscope.model.settings import SettingError, Settings, check_setting

if TYPE_CHECKING:
    from leakscope.drive.interpreter import Interpreter
    from leakscope.model.config import CheckSettings

DEFAULT_RUN_FILE = ".leakscope/last-run.json"
# `check` with several targets writes one run file per target here.
DEFAULT_CHECK_DIR = ".leakscope/check"
# Settings whose option is not spelled as the setting is.
_FLAGS = {"time_slice": "--slice"}


def flag(name: str) -> str:
    """The option a setting is given by: ``memory_limit`` is ``--memory-limit``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _shown(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."


def checked(name: str, value: Any) -> Any:
    """One option's value through the rule every face shares; digits become numbers first."""
    typed = int(value) if isinstance(value, str) and value.isdigit() else value
    try:
        return check_setting(name, typed)
    except SettingError as exc:
        raise UsageError(f"{flag(name)} {_shown(value)}: {exc.expected}") from None


def settings(**given: Any) -> Settings:
    """A run's ``Settings`` from the options given (None: the default), each one checked."""
    values = {name: checked(name, value) if name in _CHECKED else value
              for name, value in given.items() if value is not None}
    return Settings(**values)


# `sample` is checked by the command first: it decides the mode and the window.
_CHECKED = ("iterations", "warmup", "frames", "top", "timeout", "memory_limit", "trace_units",
            "max_growth", "holders", "mode")


@dataclass
class Outputs:
    """Where a command writes the run, and what it does with the verdict."""

    json_path: Path
    html_path: Path | None = None
    fail_on_leak: bool = False

    def check(self) -> Outputs:
        """Refuse a path that cannot be written before a long run, not after it."""
        check_writable(self.json_path, "--json")
        if self.html_path is not None:
            check_writable(self.html_path, "--html")
        return self


def check_writable(path: Path, option: str) -> None:
    """A path a file can be written to (its directory may not exist yet)."""
    runfile.check_runs_directory(path)
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{option} {path}: cannot write there ({parent} is not a writable directory)"
        )


def choose_python(explicit: str | None) -> Interpreter:
    """The worker's interpreter, said in one line (on stderr: check's stdout is for CI)."""
    from leakscope.cli.output import note
    from leakscope.drive.interpreter import choose

    interpreter = choose(explicit)
    note(interpreter.describe())
    return interpreter


def use_interpreter(settings: Settings, interpreter: Interpreter) -> None:
    settings.python = interpreter.path
    settings.python_from = interpreter.chosen_by


def layered(**given: Any) -> CheckSettings:
    """`check`'s options as the top layer over pyproject.toml (None: not given here)."""
    from leakscope.model.config import CheckSettings

    return CheckSettings(**{name: None if value is None else checked(name, value)
                            for name, value in given.items()})
