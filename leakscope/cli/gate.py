"""`check`: the CI gate over one target, a saved run, or every target pyproject.toml lists."""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from leakscope.cli.options import (
    DEFAULT_CHECK_DIR,
    DEFAULT_RUN_FILE,
    check_writable,
    choose_python,
    use_interpreter,
)
from leakscope.cli.output import console, error_line, print_plain
from leakscope.cli.tracing import Interrupted, interrupted, trace_and_save
from leakscope.model import runfile
from leakscope.model.errors import EXIT_LEAK, EXIT_WORKER, LeakscopeError, UsageError
from leakscope.model.runfile import Run
from leakscope.model.settings import DEFAULT_FAST_ITERATIONS, Settings

if TYPE_CHECKING:
    from leakscope.analysis.budget import Decision
    from leakscope.model.config import CheckSettings, Config


@dataclass
class CheckRequest:
    """What `check` was asked: its options, checked, and which of them only tracing uses."""

    target: str | None
    settings: CheckSettings
    worker_args: list[str] = field(default_factory=list)
    json_path: Path | None = None
    junit_path: Path | None = None
    python: str | None = None
    # Options given that have no effect on a saved run (named as on the command line).
    trace_options: list[str] = field(default_factory=list)


def check(request: CheckRequest) -> None:
    """Trace TARGET (or read RUN.json), judge it against its budget, exit 1 above it."""
    from leakscope.model import config as configmod

    cfg = configmod.load()
    if request.junit_path is not None:
        check_writable(request.junit_path, "--junit")
    target = request.target
    if target is not None and target.endswith(".json"):
        if request.trace_options:
            raise UsageError(f"{request.trace_options[0]}: has no effect when checking a "
                             f"saved run ({target})")
        decisions = [check_saved(Path(target), request.settings, cfg)]
        traced = False
    else:
        decisions = check_traced(request, cfg)
        traced = True
    if request.junit_path is not None:
        from leakscope.render.junit import write_junit

        print_plain(f"JUnit XML: {write_junit(decisions, request.junit_path)}")
    if len(decisions) > 1:
        failed = sum(1 for d in decisions if d.failed)
        errors = sum(1 for d in decisions if d.run is None)
        print_plain(
            f"leakscope: {len(decisions)} targets: {failed} above the budget, "
            f"{errors} failed to run, {len(decisions) - failed - errors} passed"
        )
    # A saved run is judged by its verdict, whether or not its trace was interrupted.
    if traced and any(d.run is not None and interrupted(d.run) for d in decisions):
        raise Interrupted
    if any(d.run is None for d in decisions):
        raise typer.Exit(EXIT_WORKER)
    if any(d.failed for d in decisions):
        raise typer.Exit(EXIT_LEAK)


def run_file_name(target: str, taken: set[str]) -> str:
    """A run file name per target when `check` traces several: readable and unique."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", target).strip("_.") or "target"
    name, n = f"{stem}.json", 2
    while name in taken:
        name, n = f"{stem}-{n}.json", n + 1
    taken.add(name)
    return name


def run_paths(targets: list[str], json_path: Path | None) -> list[Path]:
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
        paths = [directory / run_file_name(target, taken) for target in targets]
    for path in paths:
        check_writable(path, "--json")
    return paths


def budget_of(layers: CheckSettings) -> int:
    from leakscope.analysis.budget import DEFAULT_MAX_GROWTH, parse_max_growth

    if layers.max_growth is not None:
        return layers.max_growth
    return parse_max_growth(DEFAULT_MAX_GROWTH)


def check_saved(path: Path, cli: CheckSettings, cfg: Config) -> Decision:
    """`check RUN.json`: judge the verdict the run file holds; it is never recomputed."""
    from leakscope.analysis.budget import judge
    from leakscope.model.config import CheckSettings
    from leakscope.render.text import CheckText

    run = runfile.load(path)
    if run.verdict is None:
        raise LeakscopeError(f"{path}: the run has no verdict (was it analysed?)")
    entry = cfg.entry_for(run.target)
    budget = budget_of(cli.over(entry.settings if entry else CheckSettings()).over(cfg.settings))
    decision = judge(run.target, run, budget)
    print_plain(CheckText().render(decision))
    return decision


def check_traced(request: CheckRequest, cfg: Config) -> list[Decision]:
    """`check TARGET` or `check` over the configured targets: trace each, judge each.

    A worker that fails is reported and the next target still runs, so one
    broken target does not hide the others' leaks; the exit code is then 3.
    """
    from leakscope.analysis.budget import Decision, exceeds, judge
    from leakscope.measure import target as targetmod
    from leakscope.model.config import TargetEntry
    from leakscope.model.errors import WorkerError
    from leakscope.render.text import CheckText

    target, worker_args = request.target, request.worker_args
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
    paths = run_paths([entry.target for entry in entries], request.json_path)
    interpreter = choose_python(request.python)
    decisions = []
    for entry, spec, path in zip(entries, specs, paths, strict=True):
        layers = request.settings.over(entry.settings).over(cfg.settings)
        budget = budget_of(layers)
        # check runs in fast mode unless told otherwise: a gate on every commit
        # must cost little, and fast mode reaches full mode's verdicts.
        mode = layers.mode or "fast"
        settings = Settings(args=list(entry.args), mode=mode)
        if mode == "fast":
            settings.iterations = DEFAULT_FAST_ITERATIONS
        for name in ("iterations", "warmup", "frames", "timeout", "memory_limit", "holders"):
            if getattr(layers, name) is not None:
                setattr(settings, name, getattr(layers, name))
        use_interpreter(settings, interpreter)
        if several:
            print_plain(f"-- {entry.target}")
        started = time.perf_counter()

        def show_verdict(run: Run, budget: int = budget, target: str = entry.target) -> None:
            failed = run.verdict is not None and exceeds(run.verdict, budget)
            print_plain(CheckText().render(Decision(target, budget, run=run, failed=failed)))

        try:
            run, saved, failure = trace_and_save(
                spec, settings, path, "progress" if console.is_terminal else "none",
                show_verdict,
            )
            if failure is not None:
                print_plain(f"run file: {saved}")
                raise failure
        except WorkerError as exc:
            if exc.detail:
                sys.stderr.write(exc.detail.rstrip("\n") + "\n")
            error_line(exc.message)
            decisions.append(Decision(entry.target, budget, error=exc.message,
                                      seconds=time.perf_counter() - started))
            continue
        decision = judge(entry.target, run, budget)
        decision.seconds = time.perf_counter() - started
        decisions.append(decision)
        print_plain(f"run file: {saved}")
        if interrupted(run):
            break
    return decisions
