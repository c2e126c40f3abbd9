"""`run` and `attach`: real workers, started by leakscope or already running."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from leakscope.cli.options import Outputs
from leakscope.cli.output import advice, console, err_console, print_dim
from leakscope.cli.tracing import Interrupted
from leakscope.model import runfile
from leakscope.model.errors import EXIT_INTERRUPTED, EXIT_LEAK, WorkerError
from leakscope.model.runfile import Run
from leakscope.model.settings import Settings


@dataclass
class RunSpan:
    """When `run` stops the command, and how long it waits."""

    units: int | None
    duration: float | None
    timeout: float
    stop_timeout: float


def run_command(command: list[str], settings: Settings, span: RunSpan, outputs: Outputs,
                quiet: bool, keep_run_dir: bool) -> None:
    """`leakscope run`: start the command, trace its Python processes, combine, save."""
    from leakscope.drive import launcher
    from leakscope.model.runfile import now_iso

    if command and command[0] == "--":
        command = command[1:]
    outputs.check()
    limits = launcher.RunLimits(units=span.units, duration=span.duration,
                                timeout=span.timeout, stop_timeout=span.stop_timeout)
    started_at = now_iso()
    launcher.preflight(command)
    if not quiet:
        # One line on stderr, then the command has the terminal to itself: a live
        # progress line would be drawn over the worker's own output.
        err_console.print(f"leakscope: running {shlex.join(command)}; Ctrl-C stops it and "
                          "saves what was gathered", markup=False, highlight=False)
    gathered = launcher.gather(command, settings, limits)
    try:
        finish_run(gathered, command, settings, span, started_at, outputs)
    finally:
        if keep_run_dir:
            console.print(f"run directory kept: {gathered.directory}", markup=False,
                          highlight=False, soft_wrap=True)
        else:
            launcher.remove_run_directory(gathered)


def show_and_save(run: Run, outputs: Outputs) -> Path:
    """The processes, the verdict and the advice, then the run file and the HTML report.

    Shown before the save: a save that fails (a full disk) loses the file, not
    the verdict.
    """
    from leakscope.render.console import print_processes, print_summary

    print_processes(console, run)
    console.print()
    print_summary(console, run)
    advice(run.observations.get("advice", []))
    return runfile.save(run, outputs.json_path)


def write_html_of(run: Run, outputs: Outputs) -> None:
    if outputs.html_path is not None:
        from leakscope.render.html import write_html

        print_dim(f"HTML report: {write_html(run, outputs.html_path, source_roots=[Path.cwd()])}")


def judge_exit(run: Run, outputs: Outputs) -> None:
    assert run.verdict is not None
    if outputs.fail_on_leak and run.verdict.leak:
        raise typer.Exit(EXIT_LEAK)


def finish_run(gathered: Any, command: list[str], settings: Settings, span: RunSpan,
               started_at: str, outputs: Outputs) -> None:
    """`run` after the command ended: every process's Run, combined, saved and shown."""
    from leakscope.analysis.combine import combine
    from leakscope.drive import launcher

    launcher.raise_for_nothing_done(gathered, command, span.timeout)
    runs = [launcher.process_run(log, settings) for log in gathered.watch.processes]
    run = combine(runs, " ".join(command), settings.to_dict(), started_at)
    run.settings["units"] = span.units
    run.settings["duration"] = span.duration
    run.observations["command"] = {
        "argv": command, "stopped_because": gathered.reason, "exit_code": gathered.exit_code,
        "seconds": round(gathered.seconds, 2),
    }
    was_interrupted = gathered.reason == "interrupted"
    if was_interrupted:
        run.observations["interrupted"] = True
        if run.verdict is not None:
            run.verdict.partial = True
    saved = show_and_save(run, outputs)
    print_dim(f"run file: {saved}")
    write_html_of(run, outputs)
    if was_interrupted:
        raise Interrupted
    if gathered.exit_code not in (None, 0):
        raise WorkerError(
            f"{os.path.basename(command[0])} exited with code {gathered.exit_code} "
            f"after {gathered.seconds:.1f}s{launcher.OUTPUT_ABOVE}"
        )
    judge_exit(run, outputs)


@dataclass
class AttachSpan:
    """How long `attach` stays, and what a unit is where no framework says."""

    units: int | None
    duration: float | None
    time_slice: float
    wait: float


def attach_to(pid: str, children: bool, settings: Settings, span: AttachSpan,
              outputs: Outputs) -> None:
    """`leakscope attach`: measure a running process for a span, then leave it as it was."""
    from leakscope.analysis.combine import combine
    from leakscope.drive import attach, launcher
    from leakscope.model.runfile import now_iso

    outputs.check()
    units, duration = span.units, span.duration
    if units is None and duration is None:
        units, duration = attach.DEFAULT_UNITS, attach.DEFAULT_DURATION
    limits = attach.Limits(units=units, duration=duration, time_slice=span.time_slice,
                           safe_point_wait=span.wait)
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
        run.settings.update(units=units, duration=duration, time_slice=span.time_slice)
        run.observations["attach"] = attach.describe(attached)
        if any(r.unit == "time slice" for r in runs):
            run.observations["attach"]["unit_note"] = (
                f"no framework found: each unit is a time slice, {span.time_slice:g} s of "
                "the process's life")
        # A pool child recycled during the span is the pool's life; all gone is not.
        if attached.reason in ("interrupted", "exited"):
            run.observations["partial_because"] = attached.reason
            if run.verdict is not None:
                run.verdict.partial = True
        saved = show_and_save(run, outputs)
        info = run.observations["attach"]
        if info.get("route") == "gdb":
            stopped, held = info["stopped_seconds"] * 1000, info["held_seconds"] * 1000
            print_dim(f"attached with gdb: process stopped {stopped:.1f} ms, "
                      f"one thread held {held:.1f} ms")
        if info.get("unit_note"):
            print_dim(info["unit_note"])
        print_dim(f"run file: {saved}")
        write_html_of(run, outputs)
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
    judge_exit(run, outputs)
