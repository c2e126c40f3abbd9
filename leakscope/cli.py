"""The typer commands: parsing and printing only; the engine lives elsewhere."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from leakscope import runfile
from leakscope.errors import EXIT_INTERRUPTED, EXIT_LEAK, EXIT_USAGE, LeakscopeError, UsageError
from leakscope.settings import (
    DEFAULT_FRAMES,
    DEFAULT_ITERATIONS,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP,
    Settings,
)
from leakscope.units import parse_size

try:  # typer >= 0.16 vendors click; older ones depend on it.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import ClickException, NoArgsIsHelpError

DEFAULT_RUN_FILE = ".leakscope/last-run.json"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Find what a long-running Python worker keeps from every loop.",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Interrupted(Exception):
    """Ctrl-C after the gathered loops were saved."""


def _warmup(value: str) -> int | str:
    if value == "auto":
        return "auto"
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--warmup: expected a number or 'auto', got {value!r}") from None
    if count < 0:
        raise UsageError("--warmup: must be 0 or more")
    return count


@app.command()
def trace(
    target: str = typer.Argument(..., help="worker.py, worker.py:func or package.module:func"),
    worker_args: Optional[list[str]] = typer.Argument(  # noqa: UP007 - typer needs Optional
        None, help="Arguments after -- become the worker's sys.argv[1:]"
    ),
    iterations: int = typer.Option(DEFAULT_ITERATIONS, "--iterations", "-n", min=1,
                                   help="Measured loops."),
    warmup: str = typer.Option("5", "--warmup", "-w",
                               help="Untraced loops first: a number, or 'auto'."),
    frames: int = typer.Option(DEFAULT_FRAMES, "--frames", min=1,
                               help="Traceback depth kept per allocation."),
    json_path: Path = typer.Option(Path(DEFAULT_RUN_FILE), "--json", help="Where to write the run."),
    html_path: Optional[Path] = typer.Option(None, "--html", help="Also write an HTML report."),  # noqa: UP007
    memory_limit: str = typer.Option("512MiB", "--memory-limit",
                                     help="RSS limit for the projection."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout",
                                  help="Seconds a loop may take before the worker counts as hung."),
    top: int = typer.Option(DEFAULT_TOP, "--top", help="Changed lines kept per loop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="A progress bar, not per-loop lines."),
    no_holders: bool = typer.Option(False, "--no-holders", help="Skip the container search."),
    fail_on_leak: bool = typer.Option(False, "--fail-on-leak", help="Exit 1 when it leaks."),
) -> None:
    """Run the worker's loop under tracing, print per-loop diffs and the verdict."""
    from leakscope import target as targetmod
    from leakscope.analysis import analyse
    from leakscope.render.console import LiveLoopPrinter, ProgressObserver, print_summary
    from leakscope.supervisor import trace as run_trace

    spec = targetmod.parse(target)
    settings = Settings(
        iterations=iterations, warmup=_warmup(warmup), frames=frames,
        memory_limit=parse_size(memory_limit), timeout=timeout, top=top,
        holders=not no_holders, args=list(worker_args or []),
    )
    if quiet:
        with ProgressObserver(console, iterations) as observer:
            run = run_trace(spec, settings, observer)
    else:
        run = run_trace(spec, settings, LiveLoopPrinter(console))
    analyse(run)
    saved = runfile.save(run, json_path)
    console.print()
    print_summary(console, run)
    console.print(f"[dim]run file: {saved}[/dim]")
    if html_path is not None:
        from leakscope.render.html import write_html

        console.print(f"[dim]HTML report: {write_html(run, html_path)}[/dim]")
    if run.observations.get("interrupted"):
        raise Interrupted
    assert run.verdict is not None
    if fail_on_leak and run.verdict.leak:
        raise typer.Exit(EXIT_LEAK)


@app.command()
def report(run_path: Path = typer.Argument(..., metavar="RUN.json")) -> None:
    """Print the verdict and details of a saved run."""
    from leakscope.render.console import print_summary

    run = runfile.load(run_path)
    if run.verdict is None:
        raise LeakscopeError(f"{run_path}: the run has no verdict (was it analysed?)")
    console.print(f"[dim]{run.target} · Python {run.python} · {run.started_at}[/dim]")
    print_summary(console, run)


def main(argv: list[str] | None = None) -> None:
    """Entry point: typed errors become one line and their exit code, never a traceback."""
    # Piped into `head`, exit quietly as other Unix tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="leakscope", standalone_mode=False)
    except LeakscopeError as exc:
        if exc.detail:
            sys.stderr.write(exc.detail.rstrip("\n") + "\n")
        err_console.print(f"leakscope: error: {exc.message}", markup=False)
        sys.exit(exc.exit_code)
    except Interrupted:
        err_console.print("leakscope: interrupted; the loops gathered so far were saved",
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
    sys.exit(0)
