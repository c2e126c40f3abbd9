"""What the commands print: one console for results, one for notes and errors."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

from leakscope.render.safe import printable

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_plain(text: str) -> None:
    """Text as it is, one line per line: a CI log must not see rich's wrapping or markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_dim(text: str) -> None:
    """A dim line of text that may hold run strings or paths: shown, never read as markup."""
    console.print(Text(printable(text), style="dim"))


def note(text: str) -> None:
    """A dim ``leakscope:`` line on stderr (check's stdout is for the CI log)."""
    err_console.print(f"leakscope: {printable(text)}", style="dim", markup=False,
                      highlight=False)


def error_line(message: str) -> None:
    """One ``leakscope: error:`` line on stderr; messages quote paths and values from files."""
    err_console.print(f"leakscope: error: {printable(message)}", markup=False)


def say(line: str) -> None:
    """One line to stderr from a signal handler: plain write, no rich lock to wait on."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def advice(lines: list[str]) -> None:
    """The recycling advice of a real worker's run, one line each."""
    for line in lines:
        console.print(Text.assemble(("advice", "yellow"), " ", printable(str(line))))
