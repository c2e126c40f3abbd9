"""The typer commands: each parses its options into checked values and calls one function.

What a command does lives in the module named for it (``tracing``, ``gate``,
``saved``, ``workers``); the values' rules live in ``leakscope.model.settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from leakscope.cli import options, saved
from leakscope.cli.options import DEFAULT_CHECK_DIR, DEFAULT_RUN_FILE, Outputs
from leakscope.cli.output import console
from leakscope.model.settings import (
    DEFAULT_CHECKPOINT_EVERY,
    DEFAULT_FAST_ITERATIONS,
    DEFAULT_FRAMES,
    DEFAULT_ITERATIONS,
    DEFAULT_RUN_FRAMES,
    DEFAULT_RUN_WARMUP,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP,
    DEFAULT_TRACE_UNITS,
    DEFAULT_WARMUP,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    # Click passes these down to every command's context, so `-h` works everywhere.
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Find what a long-running Python worker keeps from every loop.",
)


def _print_version(value: bool) -> None:
    """--version: one line, then exit 0, before any command is parsed."""
    if value:
        from leakscope import __version__

        console.print(f"leakscope {__version__}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version,
        help="Print the version and exit.",
    ),
) -> None:
    """Find what a long-running Python worker keeps from every loop."""


@app.command()
def trace(
    target: str = typer.Argument(..., help="worker.py, worker.py:func or package.module:func"),
    worker_args: Optional[list[str]] = typer.Argument(  # noqa: UP007, UP045 - typer needs Optional
        None, help="Arguments after -- become the worker's sys.argv[1:]"
    ),
    iterations: Optional[int] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--iterations", "-n",
        help=f"Measured loops (default {DEFAULT_ITERATIONS}; "
             f"{DEFAULT_FAST_ITERATIONS} with --fast).",
    ),
    warmup: str = typer.Option(str(DEFAULT_WARMUP), "--warmup", "-w",
                               help="Untraced loops first: a number, or 'auto'."),
    fast: bool = typer.Option(
        False, "--fast",
        help="Measure with cheap counters; trace only a few loops, and only if memory grows.",
    ),
    frames: int = typer.Option(DEFAULT_FRAMES, "--frames",
                               help="Traceback depth kept per allocation."),
    json_path: Path = typer.Option(Path(DEFAULT_RUN_FILE), "--json",
                                   help="Where to write the run."),
    html_path: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--html", help="Also write an HTML report."
    ),
    memory_limit: str = typer.Option("512MiB", "--memory-limit",
                                     help="RSS limit for the projection."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout",
                                  help="Seconds a loop may take before the worker counts as hung."),
    top: int = typer.Option(DEFAULT_TOP, "--top", help="Changed lines kept per loop."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="A progress bar, not per-loop lines."),
    no_holders: bool = typer.Option(False, "--no-holders", help="Skip the container search."),
    python: Optional[str] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--python", metavar="PATH",
        help="The interpreter that runs the worker (default: $VIRTUAL_ENV's, then "
             "./.venv/bin/python, then leakscope's own). It needs no leakscope installed.",
    ),
    fail_on_leak: bool = typer.Option(False, "--fail-on-leak", help="Exit 1 when it leaks."),
) -> None:
    """Run the worker's loop under tracing, print per-loop diffs and the verdict."""
    from leakscope.cli.tracing import trace_worker

    settings = options.settings(
        iterations=iterations if iterations is not None
        else DEFAULT_FAST_ITERATIONS if fast else DEFAULT_ITERATIONS,
        warmup=warmup, frames=frames, memory_limit=memory_limit, timeout=timeout, top=top,
        holders=not no_holders, args=list(worker_args or []), mode="fast" if fast else "full",
    )
    trace_worker(target, settings, Outputs(json_path, html_path, fail_on_leak), python, quiet)


@app.command()
def report(run_path: Path = typer.Argument(..., metavar="RUN.json")) -> None:
    """Print the verdict and details of a saved run."""
    saved.report(run_path)


@app.command()
def html(
    run_path: Path = typer.Argument(..., metavar="RUN.json"),
    output: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--output", "-o", help="Where to write it (default reports/<run name>.html)."
    ),
    open_page: bool = typer.Option(False, "--open", help="Open it in the web browser."),
) -> None:
    """Write a self-contained HTML report of a saved run (no network needed to view it)."""
    saved.html(run_path, output, open_page)


@app.command()
def check(
    target: Optional[str] = typer.Argument(  # noqa: UP007, UP045 - typer needs Optional
        None, metavar="[TARGET|RUN.json]",
        help="A worker to trace, or a saved run; default: the targets in [tool.leakscope].",
    ),
    worker_args: Optional[list[str]] = typer.Argument(  # noqa: UP007, UP045
        None, help="Arguments after -- become the worker's sys.argv[1:]"
    ),
    max_growth: Optional[str] = typer.Option(  # noqa: UP007, UP045
        None, "--max-growth",
        help="Growth per iteration allowed before it fails: 512B, 4KiB, 1MiB (default 0B).",
    ),
    iterations: Optional[int] = typer.Option(  # noqa: UP007, UP045
        None, "--iterations", "-n",
        help=f"Measured loops (default {DEFAULT_FAST_ITERATIONS} in fast mode, which check "
             f"uses; {DEFAULT_ITERATIONS} with --full).",
    ),
    warmup: Optional[str] = typer.Option(  # noqa: UP007, UP045
        None, "--warmup", "-w",
        help=f"Untraced loops first: a number (default {DEFAULT_WARMUP}), or 'auto'."
    ),
    frames: Optional[int] = typer.Option(  # noqa: UP007, UP045
        None, "--frames",
        help=f"Traceback depth kept per allocation (default {DEFAULT_FRAMES}).",
    ),
    timeout: Optional[float] = typer.Option(  # noqa: UP007, UP045
        None, "--timeout",
        help=f"Seconds a loop may take before the worker counts as hung "
             f"(default {DEFAULT_TIMEOUT:g}).",
    ),
    memory_limit: Optional[str] = typer.Option(  # noqa: UP007, UP045
        None, "--memory-limit", help="RSS limit for the projection (default 512MiB)."
    ),
    python: Optional[str] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--python", metavar="PATH",
        help="The interpreter that runs the worker (default: $VIRTUAL_ENV's, then "
             "./.venv/bin/python, then leakscope's own). It needs no leakscope installed.",
    ),
    no_holders: bool = typer.Option(False, "--no-holders", help="Skip the container search."),
    full: Optional[bool] = typer.Option(  # noqa: UP007, UP045
        None, "--full/--fast",
        help="Full mode traces every loop; fast mode (the default) traces only to locate "
             "growth the cheap counters found.",
    ),
    junit_path: Optional[Path] = typer.Option(  # noqa: UP007, UP045
        None, "--junit", help="Also write JUnit XML: one testcase per target."
    ),
    json_path: Optional[Path] = typer.Option(  # noqa: UP007, UP045
        None, "--json",
        help=f"A .json file for the run, or a directory for one run file per target "
             f"(default {DEFAULT_RUN_FILE}, or {DEFAULT_CHECK_DIR}/ for several targets).",
    ),
) -> None:
    """CI gate: trace TARGET (or read RUN.json); exit 1 if it leaks above --max-growth.

    Prints one line for the CI log, then a short summary. Options not given
    here come from [tool.leakscope] in the nearest pyproject.toml, so that
    `leakscope check` alone checks every target listed there.
    """
    from leakscope.cli.gate import CheckRequest
    from leakscope.cli.gate import check as check_gate

    trace_options = [name for name, value in (
        ("--iterations", iterations), ("--warmup", warmup), ("--frames", frames),
        ("--timeout", timeout), ("--memory-limit", memory_limit), ("--json", json_path),
        ("--no-holders", no_holders or None), ("worker arguments", worker_args or None),
        ("--full/--fast", full), ("--python", python),
    ) if value is not None]
    check_gate(CheckRequest(
        target=target, worker_args=list(worker_args or []), json_path=json_path,
        junit_path=junit_path, python=python, trace_options=trace_options,
        settings=options.layered(
            max_growth=max_growth, iterations=iterations, warmup=warmup, frames=frames,
            timeout=timeout, memory_limit=memory_limit, holders=False if no_holders else None,
            mode=None if full is None else ("full" if full else "fast"),
        ),
    ))


@app.command()
def diff(
    base_path: Path = typer.Argument(..., metavar="BASE.json"),
    new_path: Path = typer.Argument(..., metavar="NEW.json"),
    fail_on_new: bool = typer.Option(
        False, "--fail-on-new", help="Exit 1 when NEW grows a site or container BASE did not."
    ),
) -> None:
    """Compare two runs: the sites and containers that grow in NEW and not in BASE, and the rate."""
    saved.diff(base_path, new_path, fail_on_new)


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
def run_command(
    command: list[str] = typer.Argument(..., metavar="-- COMMAND [ARGS...]",
                                        help="The worker command, unchanged."),
    units: Optional[int] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--units", min=1,
        help="Stop the command once this many units (tasks, jobs, requests) are done in all.",
    ),
    duration: Optional[float] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--duration", help="Stop the command after this many seconds."
    ),
    warmup: int = typer.Option(DEFAULT_RUN_WARMUP, "--warmup", "-w",
                               help="Untraced units first, in each process."),
    sample: str = typer.Option(
        "auto", "--sample",
        help="'auto': watch each process with cheap counters and trace it once it grows; "
             "1: trace every unit; K: trace every Kth process, watch the others.",
    ),
    checkpoint_every: int = typer.Option(
        DEFAULT_CHECKPOINT_EVERY, "--checkpoint-every", min=1,
        help="Walk the heap for growing containers every N traced units.",
    ),
    trace_units: Optional[int] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--trace-units",
        help=f"Traced units per process before tracing stops and the counters carry on "
             f"(default {DEFAULT_TRACE_UNITS} with --sample auto or K; 0: no limit, "
             f"as with --sample 1).",
    ),
    frames: int = typer.Option(DEFAULT_RUN_FRAMES, "--frames",
                               help="Traceback depth kept per allocation."),
    json_path: Path = typer.Option(Path(DEFAULT_RUN_FILE), "--json",
                                   help="Where to write the run."),
    html_path: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--html", help="Also write an HTML report."
    ),
    memory_limit: str = typer.Option(
        "512MiB", "--memory-limit",
        help="RSS limit for the projection and the recycling advice "
             "(Celery's --max-memory-per-child wins when set).",
    ),
    timeout: float = typer.Option(DEFAULT_TIMEOUT, "--timeout",
                                  help="Seconds to wait for the first completed unit."),
    stop_timeout: float = typer.Option(
        30.0, "--stop-timeout", help="Seconds the command gets to stop after SIGTERM."
    ),
    top: int = typer.Option(DEFAULT_TOP, "--top", help="Changed lines kept per unit."),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="No line from leakscope before the command's output."),
    no_holders: bool = typer.Option(False, "--no-holders", help="Skip the container search."),
    fail_on_leak: bool = typer.Option(False, "--fail-on-leak", help="Exit 1 when it leaks."),
    keep_run_dir: bool = typer.Option(
        False, "--keep-run-dir",
        help="Keep the run directory (each process's events file) and print where it is.",
    ),
) -> None:
    """Run a real worker command (Celery, RQ, gunicorn, any Python program) and trace every
    Python process it starts, one unit per task, job or request. The command keeps the
    terminal: its input and output pass through; leakscope speaks when it has ended."""
    from leakscope.cli.workers import RunSpan
    from leakscope.cli.workers import run_command as run_worker

    every = options.checked("sample", sample)
    settings = options.settings(
        warmup=warmup, frames=frames, memory_limit=memory_limit, timeout=timeout, top=top,
        holders=not no_holders, sample=every, checkpoint_every=checkpoint_every,
        mode="full" if every == 1 else "fast",
        trace_units=(0 if every == 1 else DEFAULT_TRACE_UNITS) if trace_units is None
        else trace_units,
    )
    span = RunSpan(units=units, timeout=settings.timeout,
                   duration=None if duration is None else options.checked("duration", duration),
                   stop_timeout=options.checked("stop_timeout", stop_timeout))
    run_worker(command, settings, span, Outputs(json_path, html_path, fail_on_leak), quiet,
               keep_run_dir)


@app.command("attach")
def attach_command(
    pid: str = typer.Argument(..., metavar="PID", help="The Python process to measure."),
    units: Optional[int] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--units", min=1,
        help="Leave after this many units (tasks, jobs, requests, time slices); default "
             "200, or 60 s, whichever comes first.",
    ),
    duration: Optional[float] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--duration", help="Leave after this many seconds.",
    ),
    time_slice: float = typer.Option(
        0.25, "--slice", help="Seconds per unit in a process with no framework leakscope knows.",
    ),
    wait: float = typer.Option(
        30.0, "--wait",
        help="Seconds a thread of the process gets to reach a safe point (a blocking call).",
    ),
    children: bool = typer.Option(False, "--children",
                                  help="Attach to every Python child of PID instead."),
    warmup: int = typer.Option(DEFAULT_RUN_WARMUP, "--warmup", "-w",
                               help="Untraced units first."),
    sample: str = typer.Option(
        "1", "--sample",
        help="1 (default): trace every unit after the warm-up, for the span only; 'auto': "
             "watch with cheap counters and trace once it grows (needs 300+ units).",
    ),
    frames: int = typer.Option(DEFAULT_RUN_FRAMES, "--frames",
                               help="Traceback depth kept per allocation."),
    json_path: Path = typer.Option(Path(DEFAULT_RUN_FILE), "--json",
                                   help="Where to write the run."),
    html_path: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--html", help="Also write an HTML report."
    ),
    memory_limit: str = typer.Option("512MiB", "--memory-limit",
                                     help="RSS limit for the projection and the advice."),
    no_holders: bool = typer.Option(False, "--no-holders", help="Skip the container search."),
    fail_on_leak: bool = typer.Option(False, "--fail-on-leak", help="Exit 1 when it leaks."),
) -> None:
    """Measure a Python process that is already running, then leave it as it was.
    Units come from its framework (gunicorn request, Celery task, RQ job), else time
    slices. Needs gdb (CPython 3.10-3.13) or sys.remote_exec (3.14+)."""
    from leakscope.cli.workers import AttachSpan, attach_to

    every = options.checked("sample", sample)
    settings = options.settings(
        warmup=warmup, frames=frames, memory_limit=memory_limit, top=DEFAULT_TOP,
        holders=not no_holders, sample=every, mode="full" if every == 1 else "fast",
        trace_units=0 if every == 1 else DEFAULT_TRACE_UNITS,
    )
    span = AttachSpan(
        units=units, duration=None if duration is None else options.checked("duration", duration),
        time_slice=options.checked("time_slice", time_slice), wait=options.checked("wait", wait),
    )
    attach_to(pid, children, settings, span, Outputs(json_path, html_path, fail_on_leak))
