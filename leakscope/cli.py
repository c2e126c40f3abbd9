"""The typer commands: parsing and printing only; the engine lives elsewhere."""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from leakscope import runfile
from leakscope.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_LEAK,
    EXIT_USAGE,
    EXIT_WORKER,
    Abandoned,
    LeakscopeError,
    RunFileError,
    UsageError,
    WorkerError,
)
from leakscope.render.safe import printable
from leakscope.runfile import Run
from leakscope.settings import (
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
    MAX_FRAMES,
    MAX_SECONDS,
    MIN_TRACE_UNITS,
    Settings,
)
from leakscope.units import parse_size

if TYPE_CHECKING:
    from leakscope.budget import Decision
    from leakscope.config import CheckSettings, Config
    from leakscope.interpreter import Interpreter
    from leakscope.target import TargetSpec

try:  # typer >= 0.16 vendors click; older ones depend on it.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - depends on the installed typer
    # The dev environment's typer vendors click, so the checker sees the first import.
    from click.exceptions import (  # type: ignore[assignment]
        ClickException,
        NoArgsIsHelpError,
    )

DEFAULT_RUN_FILE = ".leakscope/last-run.json"
# `check` with several targets writes one run file per target here.
DEFAULT_CHECK_DIR = ".leakscope/check"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    # Click passes these down to every command's context, so `-h` works everywhere.
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Find what a long-running Python worker keeps from every loop.",
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Interrupted(Exception):
    """Ctrl-C after the gathered loops were saved."""


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


def _sample(value: str) -> int:
    """--sample: a count of units (1 traces every unit), or 'auto' (0)."""
    if value == "auto":
        return 0
    try:
        count = int(value)
    except ValueError:
        raise UsageError(f"--sample: expected a number or 'auto', got {value!r}") from None
    if count < 1:
        raise UsageError("--sample: must be 1 or more (or 'auto')")
    return count


def _seconds(option: str, value: float) -> float:
    """A timeout or duration: above 0 and finite (inf would overflow a pipe wait mid-run)."""
    if not 0 < value <= MAX_SECONDS:
        raise UsageError(
            f"{option}: must be more than 0 and at most {MAX_SECONDS:,.0f} seconds, "
            f"got {value:g}"
        )
    return value


def _size(option: str, text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc.message}") from None


def _check_writable(path: Path, option: str) -> None:
    """Refuse an output path that cannot be written before a long run, not after it."""
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


def _choose_python(explicit: str | None) -> Interpreter:
    """The worker's interpreter, said in one line (on stderr: check's stdout is for CI)."""
    from leakscope.interpreter import choose

    interpreter = choose(explicit)
    err_console.print(f"leakscope: {interpreter.describe()}", style="dim", markup=False,
                      highlight=False)
    return interpreter


def _use_interpreter(settings: Settings, interpreter: Interpreter) -> None:
    settings.python = interpreter.path
    settings.python_from = interpreter.chosen_by
def _say(line: str) -> None:
    """One line to stderr from a signal handler: plain write, no rich lock to wait on."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _trace_and_save(
    spec: TargetSpec, settings: Settings, json_path: Path, show: str,
    on_verdict: Callable[[Run], None],
) -> tuple[Run, Path, WorkerError | None]:
    """Trace, analyse, show and save one worker: the path `trace` and `check TARGET` share.

    The engine is called here and nowhere else in the CLI, so a cheaper mode
    (`check --fast`) changes one place. ``show`` is what the terminal sees
    while it runs: ``live`` per-loop lines, a ``progress`` bar, or ``none``.

    Nothing gathered is lost: a worker that dies after some loops still gets
    its partial run saved (the error comes back as the third value, for the
    caller to raise after it has said where the run is), and the verdict is
    shown (``on_verdict``) before the save, so a full disk or a Ctrl-C in the
    save cannot hide it. A Ctrl-C after every loop arrived cuts nothing (see
    ``supervisor.Interrupts``); ``Interrupted`` follows the save.
    """
    from leakscope.analysis import analyse
    from leakscope.render.console import LiveLoopPrinter, ProgressObserver
    from leakscope.supervisor import Interrupts
    from leakscope.supervisor import trace as run_trace

    failure: WorkerError | None = None
    with Interrupts(_say) as interrupts:
        try:
            if show == "progress":
                with ProgressObserver(console, settings.iterations) as observer:
                    run = run_trace(spec, settings, observer, interrupts=interrupts)
            elif show == "live":
                run = run_trace(spec, settings, LiveLoopPrinter(console),
                                interrupts=interrupts)
            else:
                run = run_trace(spec, settings, interrupts=interrupts)
        except WorkerError as exc:
            if exc.run is None:
                raise
            run, failure = exc.run, exc
        interrupts.finishing()  # every loop that will come has come
        note = (run.observations.get("locator") or {}).get("note")
        if note:
            err_console.print(f"leakscope: {printable(note)}", style="dim", markup=False,
                              highlight=False)
        analyse(run)
        skipped = _skipped_holder_search(run)
        if skipped:
            err_console.print(f"leakscope: {printable(skipped)}", style="dim", markup=False,
                              highlight=False)
        on_verdict(run)
        if interrupts.presses and not run.observations.get("interrupted"):
            # Ctrl-C once the loops were all in: the verdict is whole.
            run.observations["interrupted_while_finishing"] = True
        try:
            saved = runfile.save(run, json_path)
        except RunFileError as exc:
            if failure is None:
                raise
            # One error line: the worker's failure, which the exit code reports,
            # and that its partial run is not on disk either.
            raise WorkerError(f"{failure.message}; {exc.message}", failure.detail) from None
        if interrupts.presses and not run.observations.get("interrupted"):
            # Ctrl-C during the save itself: the run is on disk, the exit code says 130.
            run.observations["interrupted_while_finishing"] = True
    return run, saved, failure


def _skipped_holder_search(run: Run) -> str:
    """One line when a leak has no container named because the deep search did not run."""
    verdict = run.verdict
    if verdict is None or not verdict.leak or any(h.growing for h in run.holders):
        return ""
    search = run.observations.get("holder_search") or {}
    backrefs = search.get("backrefs") if isinstance(search, dict) else None
    if not isinstance(backrefs, dict) or not backrefs.get("skipped"):
        return ""
    reason = str(backrefs["skipped"])
    hint = ("; install objgraph in the worker's environment to search deeper"
            if "objgraph" in reason else "")
    return f"no container named: the back-reference search was skipped ({reason}){hint}"


@app.command()
def trace(
    target: str = typer.Argument(..., help="worker.py, worker.py:func or package.module:func"),
    worker_args: Optional[list[str]] = typer.Argument(  # noqa: UP007, UP045 - typer needs Optional
        None, help="Arguments after -- become the worker's sys.argv[1:]"
    ),
    iterations: Optional[int] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--iterations", "-n", min=1,
        help=f"Measured loops (default {DEFAULT_ITERATIONS}; "
             f"{DEFAULT_FAST_ITERATIONS} with --fast).",
    ),
    warmup: str = typer.Option(str(DEFAULT_WARMUP), "--warmup", "-w",
                               help="Untraced loops first: a number, or 'auto'."),
    fast: bool = typer.Option(
        False, "--fast",
        help="Measure with cheap counters; trace only a few loops, and only if memory grows.",
    ),
    frames: int = typer.Option(DEFAULT_FRAMES, "--frames", min=1, max=MAX_FRAMES,
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
    top: int = typer.Option(DEFAULT_TOP, "--top", min=0, help="Changed lines kept per loop."),
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
    from leakscope import target as targetmod
    from leakscope.render.console import print_summary

    spec = targetmod.parse(target)
    _seconds("--timeout", timeout)
    _check_writable(json_path, "--json")
    if html_path is not None:
        _check_writable(html_path, "--html")
    if iterations is None:
        iterations = DEFAULT_FAST_ITERATIONS if fast else DEFAULT_ITERATIONS
    settings = Settings(
        iterations=iterations, warmup=_warmup(warmup), frames=frames,
        memory_limit=_size("--memory-limit", memory_limit), timeout=timeout, top=top,
        holders=not no_holders, args=list(worker_args or []),
        mode="fast" if fast else "full",
    )
    _use_interpreter(settings, _choose_python(python))

    def show_verdict(run: Run) -> None:
        console.print()
        print_summary(console, run)

    run, saved, failure = _trace_and_save(
        spec, settings, json_path, "progress" if quiet else "live", show_verdict
    )
    _print_dim(f"run file: {saved}")
    if html_path is not None:
        from leakscope.render.html import write_html

        # The run was made here, now: its source is this directory's and the target's.
        roots = [Path.cwd(), *([Path(spec.path).parent] if spec.path else [])]
        _print_dim(f"HTML report: {write_html(run, html_path, source_roots=roots)}")
    if failure is not None:
        raise failure
    if run.observations.get("interrupted") or run.observations.get("interrupted_while_finishing"):
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
    _print_dim(f"{run.target} · Python {run.python} · {run.started_at}")
    print_summary(console, run)


@app.command()
def html(
    run_path: Path = typer.Argument(..., metavar="RUN.json"),
    output: Optional[Path] = typer.Option(  # noqa: UP007, UP045 - typer needs Optional
        None, "--output", "-o", help="Where to write it (default reports/<run name>.html)."
    ),
    open_page: bool = typer.Option(False, "--open", help="Open it in the web browser."),
) -> None:
    """Write a self-contained HTML report of a saved run (no network needed to view it)."""
    from leakscope.render.html import run_tree, write_html

    run = runfile.load(run_path)
    default = Path("reports") / f"{run_path.stem}.html"
    written = write_html(run, output if output is not None else default,
                         source_roots=[run_tree(run_path)])
    _print_plain(printable(str(written)))
    if open_page:
        import webbrowser

        if not webbrowser.open(written.resolve().as_uri()):
            err_console.print("leakscope: no web browser found to open it", markup=False)


def _print_plain(text: str) -> None:
    """Text as it is, one line per line: a CI log must not see rich's wrapping or markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _print_dim(text: str) -> None:
    """A dim line of text that may hold run strings or paths: shown, never read as markup."""
    console.print(Text(printable(text), style="dim"))


def _run_file_name(target: str, taken: set[str]) -> str:
    """A run file name per target when `check` traces several: readable and unique."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_.") or "target"
    name, n = f"{stem}.json", 2
    while name in taken:
        name, n = f"{stem}-{n}.json", n + 1
    taken.add(name)
    return name


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
        None, "--iterations", "-n", min=1,
        help=f"Measured loops (default {DEFAULT_FAST_ITERATIONS} in fast mode, which check "
             f"uses; {DEFAULT_ITERATIONS} with --full).",
    ),
    warmup: Optional[str] = typer.Option(  # noqa: UP007, UP045
        None, "--warmup", "-w",
        help=f"Untraced loops first: a number (default {DEFAULT_WARMUP}), or 'auto'."
    ),
    frames: Optional[int] = typer.Option(  # noqa: UP007, UP045
        None, "--frames", min=1, max=MAX_FRAMES,
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
    from leakscope import config as configmod
    from leakscope.budget import parse_max_growth

    if timeout is not None:
        _seconds("--timeout", timeout)
    cli = configmod.CheckSettings(
        max_growth=None if max_growth is None else parse_max_growth(max_growth),
        iterations=iterations, warmup=None if warmup is None else _warmup(warmup),
        frames=frames, timeout=timeout,
        memory_limit=None if memory_limit is None else _size("--memory-limit", memory_limit),
        holders=False if no_holders else None,
        mode=None if full is None else ("full" if full else "fast"),
    )
    cfg = configmod.load()
    if junit_path is not None:
        _check_writable(junit_path, "--junit")
    if target is not None and target.endswith(".json"):
        given = [name for name, value in (
            ("--iterations", iterations), ("--warmup", warmup), ("--frames", frames),
            ("--timeout", timeout), ("--memory-limit", memory_limit), ("--json", json_path),
            ("--no-holders", no_holders or None), ("worker arguments", worker_args or None),
            ("--full/--fast", full), ("--python", python),
        ) if value is not None]
        if given:
            raise UsageError(f"{given[0]}: has no effect when checking a saved run ({target})")
        decisions = [_check_saved(Path(target), cli, cfg)]
        traced = False
    else:
        decisions = _check_traced(target, list(worker_args or []), cli, cfg, json_path, python)
        traced = True
    if junit_path is not None:
        from leakscope.render.junit import write_junit

        _print_plain(f"JUnit XML: {write_junit(decisions, junit_path)}")
    if len(decisions) > 1:
        failed = sum(1 for d in decisions if d.failed)
        errors = sum(1 for d in decisions if d.run is None)
        _print_plain(
            f"leakscope: {len(decisions)} targets: {failed} above the budget, "
            f"{errors} failed to run, {len(decisions) - failed - errors} passed"
        )
    # A saved run is judged by its verdict, whether or not its trace was interrupted.
    if traced and any(d.run is not None and (
        d.run.observations.get("interrupted")
        or d.run.observations.get("interrupted_while_finishing")
    ) for d in decisions):
        raise Interrupted
    if any(d.run is None for d in decisions):
        raise typer.Exit(EXIT_WORKER)
    if any(d.failed for d in decisions):
        raise typer.Exit(EXIT_LEAK)


def _run_paths(targets: list[str], json_path: Path | None) -> list[Path]:
    """Where `check` saves each run: ``--json x.json`` is a file, anything else a directory.

    Decided by the name rather than by the number of targets, so a CI step
    with ``--json reports/leakscope`` works whether pyproject.toml lists one
    target or ten.
    """
    if json_path is not None and json_path.suffix == ".json":
        if len(targets) > 1:
            raise UsageError(
                f"--json {json_path}: {len(targets)} targets need a directory, not one file"
            )
        paths = [json_path]
    elif json_path is None and len(targets) == 1:
        paths = [Path(DEFAULT_RUN_FILE)]
    else:
        directory = json_path or Path(DEFAULT_CHECK_DIR)
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"--json {directory}: not a directory (name a .json file or a folder)")
        taken: set[str] = set()
        paths = [directory / _run_file_name(target, taken) for target in targets]
    for path in paths:
        _check_writable(path, "--json")
    return paths


def _budget(layered: CheckSettings) -> int:
    from leakscope.budget import DEFAULT_MAX_GROWTH, parse_max_growth

    if layered.max_growth is not None:
        return layered.max_growth
    return parse_max_growth(DEFAULT_MAX_GROWTH)


def _check_saved(path: Path, cli: CheckSettings, cfg: Config) -> Decision:
    """`check RUN.json`: judge the verdict the run file holds; it is never recomputed."""
    from leakscope.budget import judge
    from leakscope.config import CheckSettings
    from leakscope.render.text import CheckText

    run = runfile.load(path)
    if run.verdict is None:
        raise LeakscopeError(f"{path}: the run has no verdict (was it analysed?)")
    entry = cfg.entry_for(run.target)
    budget = _budget(cli.over(entry.settings if entry else CheckSettings()).over(cfg.settings))
    decision = judge(run.target, run, budget)
    _print_plain(CheckText().render(decision))
    return decision


def _check_traced(
    target: str | None, worker_args: list[str], cli: CheckSettings, cfg: Config,
    json_path: Path | None, python: str | None = None,
) -> list[Decision]:
    """`check TARGET` or `check` over the configured targets: trace each, judge each.

    A worker that fails is reported and the next target still runs, so one
    broken target does not hide the others' leaks; the exit code is then 3.
    """
    from leakscope import target as targetmod
    from leakscope.budget import Decision, exceeds, judge
    from leakscope.config import TargetEntry
    from leakscope.errors import WorkerError
    from leakscope.render.text import CheckText

    if target is not None:
        entry = cfg.entry_for(target) or TargetEntry(target=target)
        entries = [TargetEntry(target, worker_args or entry.args, entry.settings)]
    elif worker_args:
        raise UsageError("worker arguments after -- need a TARGET")
    elif cfg.targets:
        entries = cfg.targets
    else:
        raise UsageError(
            "check: name a TARGET or RUN.json, or list targets under [tool.leakscope] "
            "in pyproject.toml"
        )
    # Pre-flight every target before tracing any: a typo in the last one
    # should not wait for the others to run.
    specs = [targetmod.parse(entry.target) for entry in entries]
    several = len(entries) > 1
    paths = _run_paths([entry.target for entry in entries], json_path)
    interpreter = _choose_python(python)
    decisions = []
    for entry, spec, path in zip(entries, specs, paths, strict=True):
        layered = cli.over(entry.settings).over(cfg.settings)
        budget = _budget(layered)
        # check runs in fast mode unless told otherwise: a gate on every commit
        # must cost little, and fast mode reaches full mode's verdicts.
        mode = layered.mode or "fast"
        settings = Settings(args=list(entry.args), mode=mode)
        if mode == "fast":
            settings.iterations = DEFAULT_FAST_ITERATIONS
        for name in ("iterations", "warmup", "frames", "timeout", "memory_limit", "holders"):
            if getattr(layered, name) is not None:
                setattr(settings, name, getattr(layered, name))
        _use_interpreter(settings, interpreter)
        if several:
            _print_plain(f"-- {entry.target}")
        started = time.perf_counter()

        def show_verdict(run: Run, budget: int = budget, target: str = entry.target) -> None:
            failed = run.verdict is not None and exceeds(run.verdict, budget)
            _print_plain(CheckText().render(Decision(target, budget, run=run, failed=failed)))

        try:
            run, saved, failure = _trace_and_save(
                spec, settings, path, "progress" if console.is_terminal else "none",
                show_verdict,
            )
            if failure is not None:
                _print_plain(f"run file: {saved}")
                raise failure
        except WorkerError as exc:
            if exc.detail:
                sys.stderr.write(exc.detail.rstrip("\n") + "\n")
            err_console.print(f"leakscope: error: {printable(exc.message)}", markup=False)
            decisions.append(Decision(entry.target, budget, error=exc.message,
                                      seconds=time.perf_counter() - started))
            continue
        decision = judge(entry.target, run, budget)
        decision.seconds = time.perf_counter() - started
        decisions.append(decision)
        _print_plain(f"run file: {saved}")
        if run.observations.get("interrupted") or run.observations.get(
            "interrupted_while_finishing"
        ):
            break
    return decisions


@app.command()
def diff(
    base_path: Path = typer.Argument(..., metavar="BASE.json"),
    new_path: Path = typer.Argument(..., metavar="NEW.json"),
    fail_on_new: bool = typer.Option(
        False, "--fail-on-new", help="Exit 1 when NEW grows a site or container BASE did not."
    ),
) -> None:
    """Compare two runs: the sites and containers that grow in NEW and not in BASE, and the rate."""
    from leakscope.compare import compare
    from leakscope.render.text import ComparisonText

    runs = []
    for path in (base_path, new_path):
        run = runfile.load(path)
        if run.verdict is None:
            raise LeakscopeError(f"{path}: the run has no verdict (was it analysed?)")
        runs.append(run)
    comparison = compare(*runs)
    _print_plain(ComparisonText().render(comparison))
    if fail_on_new and comparison.has_new:
        raise typer.Exit(EXIT_LEAK)


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
    warmup: int = typer.Option(DEFAULT_RUN_WARMUP, "--warmup", "-w", min=0,
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
        None, "--trace-units", min=0,
        help=f"Traced units per process before tracing stops and the counters carry on "
             f"(default {DEFAULT_TRACE_UNITS} with --sample auto or K; 0: no limit, "
             f"as with --sample 1).",
    ),
    frames: int = typer.Option(DEFAULT_RUN_FRAMES, "--frames", min=1, max=MAX_FRAMES,
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
    top: int = typer.Option(DEFAULT_TOP, "--top", min=0, help="Changed lines kept per unit."),
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
    from leakscope import launcher
    from leakscope.assemble import now_iso

    if command and command[0] == "--":
        command = command[1:]
    _seconds("--timeout", timeout)
    _seconds("--stop-timeout", stop_timeout)
    if duration is not None:
        _seconds("--duration", duration)
    _check_writable(json_path, "--json")
    if html_path is not None:
        _check_writable(html_path, "--html")
    every = _sample(sample)
    if trace_units is not None and 0 < trace_units < MIN_TRACE_UNITS:
        raise UsageError(
            f"--trace-units: at least {MIN_TRACE_UNITS} (three holder walks, at 0, 10 and 30 "
            f"traced units, and the unit that locates a growing container's line), or 0 "
            f"for no limit; got {trace_units}"
        )
    settings = Settings(
        warmup=warmup, frames=frames, memory_limit=_size("--memory-limit", memory_limit),
        timeout=timeout, top=top, holders=not no_holders, sample=every,
        checkpoint_every=checkpoint_every, mode="full" if every == 1 else "fast",
        trace_units=(0 if every == 1 else DEFAULT_TRACE_UNITS) if trace_units is None
        else trace_units,
    )
    limits = launcher.RunLimits(units=units, duration=duration, timeout=timeout,
                                stop_timeout=stop_timeout)
    started_at = now_iso()
    launcher.preflight(command)
    if not quiet:
        # One line on stderr, then the command has the terminal to itself: a live
        # progress line would be drawn over the worker's own output.
        err_console.print(f"leakscope: running {shlex.join(command)}; Ctrl-C stops it and "
                          "saves what was gathered", markup=False, highlight=False)
    gathered = launcher.gather(command, settings, limits)
    try:
        _finish_run(gathered, command, settings, units, duration, timeout, started_at,
                    json_path, html_path, fail_on_leak)
    finally:
        if keep_run_dir:
            console.print(f"run directory kept: {gathered.directory}", markup=False,
                          highlight=False, soft_wrap=True)
        else:
            launcher.remove_run_directory(gathered)


def _finish_run(
    gathered: Any, command: list[str], settings: Settings, units: int | None,
    duration: float | None, timeout: float, started_at: str, json_path: Path,
    html_path: Path | None, fail_on_leak: bool,
) -> None:
    """`run` after the command ended: every process's Run, combined, saved and shown."""
    from leakscope import launcher
    from leakscope.combine import combine
    from leakscope.render.console import print_processes, print_summary

    launcher.raise_for_nothing_done(gathered, command, timeout)
    runs = [launcher.process_run(log, settings) for log in gathered.watch.processes]
    run = combine(runs, " ".join(command), settings.to_dict(), started_at)
    run.settings["units"] = units
    run.settings["duration"] = duration
    run.observations["command"] = {
        "argv": command, "stopped_because": gathered.reason, "exit_code": gathered.exit_code,
        "seconds": round(gathered.seconds, 2),
    }
    interrupted = gathered.reason == "interrupted"
    if interrupted:
        run.observations["interrupted"] = True
        if run.verdict is not None:
            run.verdict.partial = True
    # Shown before the save: a save that fails (a full disk) loses the file, not the verdict.
    print_processes(console, run)
    console.print()
    print_summary(console, run)
    for line in run.observations.get("advice", []):
        console.print(Text.assemble(("advice", "yellow"), " ", printable(str(line))))
    saved = runfile.save(run, json_path)
    _print_dim(f"run file: {saved}")
    if html_path is not None:
        from leakscope.render.html import write_html

        _print_dim(f"HTML report: {write_html(run, html_path, source_roots=[Path.cwd()])}")
    if interrupted:
        raise Interrupted
    if gathered.exit_code not in (None, 0):
        raise WorkerError(
            f"{os.path.basename(command[0])} exited with code {gathered.exit_code} "
            f"after {gathered.seconds:.1f}s{launcher.OUTPUT_ABOVE}"
        )
    assert run.verdict is not None
    if fail_on_leak and run.verdict.leak:
        raise typer.Exit(EXIT_LEAK)


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
    warmup: int = typer.Option(DEFAULT_RUN_WARMUP, "--warmup", "-w", min=0,
                               help="Untraced units first."),
    sample: str = typer.Option(
        "1", "--sample",
        help="1 (default): trace every unit after the warm-up, for the span only; 'auto': "
             "watch with cheap counters and trace once it grows (needs 300+ units).",
    ),
    frames: int = typer.Option(DEFAULT_RUN_FRAMES, "--frames", min=1, max=MAX_FRAMES,
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
    from leakscope import attach, launcher
    from leakscope.assemble import now_iso
    from leakscope.combine import combine
    from leakscope.render.console import print_processes, print_summary

    if duration is not None:
        _seconds("--duration", duration)
    _seconds("--slice", time_slice)
    _seconds("--wait", wait)
    _check_writable(json_path, "--json")
    if html_path is not None:
        _check_writable(html_path, "--html")
    every = _sample(sample)
    settings = Settings(
        warmup=warmup, frames=frames, memory_limit=_size("--memory-limit", memory_limit),
        top=DEFAULT_TOP, holders=not no_holders, sample=every,
        mode="full" if every == 1 else "fast",
        trace_units=0 if every == 1 else DEFAULT_TRACE_UNITS,
    )
    if units is None and duration is None:
        units, duration = attach.DEFAULT_UNITS, attach.DEFAULT_DURATION
    limits = attach.Limits(units=units, duration=duration, time_slice=time_slice,
                           safe_point_wait=wait)
    targets = attach.children(pid) if children else [attach.preflight(pid)]
    started_at = now_iso()
    names = ", ".join(f"pid {t.pid} (Python {t.version[0]}.{t.version[1]})" for t in targets)
    err_console.print(f"leakscope: attaching to {names}; Ctrl-C detaches and saves "
                      "what was gathered", markup=False, highlight=False)
    attached = attach.gather(targets, settings, limits)
    try:
        logs = attached.watch.processes
        if not logs or attached.watch.units == 0:
            if attached.reason == "interrupted":
                err_console.print("leakscope: interrupted before any unit of work; detached",
                                  markup=False)
                raise typer.Exit(EXIT_INTERRUPTED)
            raise WorkerError(
                f"attach: {names} completed no unit of work in "
                f"{attached.seconds:.1f}s ({attached.reason})"
            )
        runs = [launcher.process_run(log, settings) for log in logs]
        for one in runs:
            if (one.process or {}).get("pid") in attached.ended:
                one.observations["ended_during_span"] = True
                if one.verdict is not None:
                    one.verdict.partial = True
        run = combine(runs, runs[0].target, settings.to_dict(), started_at)
        run.settings.update(units=units, duration=duration, time_slice=time_slice)
        run.observations["attach"] = attach.describe(attached)
        if any(r.unit == "time slice" for r in runs):
            run.observations["attach"]["unit_note"] = (
                f"no framework found: each unit is a time slice, {time_slice:g} s of the "
                "process's life")
        # A pool child recycled during the span is the pool's life; all gone is not.
        if attached.reason in ("interrupted", "exited"):
            run.observations["partial_because"] = attached.reason
            if run.verdict is not None:
                run.verdict.partial = True
        print_processes(console, run)  # before the save, as `run` does
        console.print()
        print_summary(console, run)
        for line in run.observations.get("advice", []):
            console.print(Text.assemble(("advice", "yellow"), " ", printable(str(line))))
        saved = runfile.save(run, json_path)
        info = run.observations["attach"]
        if info.get("route") == "gdb":
            stopped, held = info["stopped_seconds"] * 1000, info["held_seconds"] * 1000
            _print_dim(f"attached with gdb: process stopped {stopped:.1f} ms, "
                       f"one thread held {held:.1f} ms")
        if info.get("unit_note"):
            _print_dim(info["unit_note"])
        _print_dim(f"run file: {saved}")
        if html_path is not None:
            from leakscope.render.html import write_html

            _print_dim(f"HTML report: {write_html(run, html_path, source_roots=[Path.cwd()])}")
    finally:
        attach.remove_run_directory(attached)
    if attached.reason == "interrupted":
        raise Interrupted
    if attached.reason == "exited":
        ended = ", ".join(f"pid {p}" for p in attached.ended)
        raise WorkerError(
            f"attach: {ended} ended during the span after {attached.seconds:.1f}s; "
            "what it gathered was saved, marked partial"
        )
    assert run.verdict is not None
    if fail_on_leak and run.verdict.leak:
        raise typer.Exit(EXIT_LEAK)


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
