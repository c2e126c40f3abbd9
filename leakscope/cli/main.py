"""The entry point: every error becomes one line and its documented exit code."""

from __future__ import annotations

import os
import signal
import sys

import typer

from leakscope.cli.app import app
from leakscope.cli.output import err_console
from leakscope.cli.tracing import Interrupted
from leakscope.model.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Abandoned,
    LeakscopeError,
)
from leakscope.render.safe import printable

try:  # typer >= 0.16 vendors click; older ones depend on it.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - depends on the installed typer
    # The dev environment's typer vendors click, so the checker sees the first import.
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: typed errors become one line and their exit code, never a traceback."""
    # Piped into `head`, exit quietly as other Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    command = typer.main.get_command(app)
    try:
        # Outside standalone mode click returns typer.Exit's code instead of raising it.
        code = command.main(args=argv, prog_name="leakscope", standalone_mode=False)
    except LeakscopeError as exc:
        if exc.detail:
            sys.stderr.write(exc.detail.rstrip("\n") + "\n")
        # Messages quote paths and values from files: one line, no escape sequences.
        err_console.print(f"leakscope: error: {printable(exc.message)}", markup=False)
        sys.exit(exc.exit_code)
    except Interrupted:
        err_console.print("leakscope: interrupted; the loops gathered so far were saved",
                          markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except Abandoned:
        err_console.print("leakscope: interrupted again: abandoned, the run was not saved",
                          markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(EXIT_USAGE)
    except ClickException as exc:
        err_console.print(
            f"leakscope: error: {exc.format_message()} (see leakscope --help)", markup=False
        )
        sys.exit(EXIT_USAGE)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("leakscope: interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
        # A bug of leakscope's own must not exit 1, which CI reads as "leak above
        # budget"; LEAKSCOPE_DEBUG=1 shows the traceback for the bug report.
        if os.environ.get("LEAKSCOPE_DEBUG"):
            import traceback

            traceback.print_exc()
        text = printable(f"{type(exc).__name__}: {exc}")
        err_console.print(
            f"leakscope: internal error: {text[:300]}; please report it "
            "(LEAKSCOPE_DEBUG=1 shows the traceback)", markup=False,
        )
        sys.exit(EXIT_INTERNAL)
    if code == EXIT_INTERRUPTED:
        # typer turns a KeyboardInterrupt into a silent exit code 130: say what happened.
        err_console.print("leakscope: interrupted", markup=False)
    sys.exit(code if isinstance(code, int) else 0)
