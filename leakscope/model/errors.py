"""The LeakscopeError family: every error the CLI can print, with its exit code.

Exit codes are fixed by the contract: 2 bad usage or unreadable input,
3 the worker itself failed, 4 leakscope itself failed (a bug: never 1,
which CI reads as a leak above budget).
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_LEAK = 1
EXIT_USAGE = 2
EXIT_WORKER = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130


class LeakscopeError(Exception):
    """An error with a one-line message and the exit code that goes with it."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Multi-line text (a worker's traceback) shown before the one line.
        self.detail = detail


class UsageError(LeakscopeError):
    """Bad command-line usage or configuration."""


class ConfigError(UsageError):
    """A bad ``[tool.leakscope]`` entry in pyproject.toml; the message names key and value."""


class TargetError(LeakscopeError):
    """The worker cannot be found, read, compiled or does not follow the contract."""


class RunFileError(LeakscopeError):
    """A run file that is missing, corrupt or not a leakscope run."""


class WorkerError(LeakscopeError):
    """The worker raised, exited, died or hung: a failed run, not a verdict.

    ``run`` holds the loops gathered before the failure (not yet analysed),
    when there were any: the CLI saves them as a partial run before it
    prints this error, because a leaking worker's likeliest end is a crash.
    """

    exit_code = EXIT_WORKER

    def __init__(self, message: str, detail: str | None = None, run: Any = None) -> None:
        super().__init__(message, detail)
        self.run = run


class Abandoned(BaseException):
    """A second Ctrl-C while leakscope finishes a run: give up without saving.

    A BaseException, so that it unwinds like KeyboardInterrupt (an atomic
    save removes its temporary file, nothing catching ``Exception`` swallows
    it) yet reaches ``main`` as itself: typer turns KeyboardInterrupt into a
    bare exit code.
    """
