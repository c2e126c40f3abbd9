"""`trace`, and the one path by which `trace` and `check TARGET` run a worker's loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from leakscope.cli.options import Outputs, choose_python, use_interpreter
from leakscope.cli.output import console, note, print_dim, say
from leakscope.model import runfile
from leakscope.model.errors import EXIT_LEAK, RunFileError, WorkerError
from leakscope.model.runfile import Run
from leakscope.model.settings import Settings

if TYPE_CHECKING:
    from leakscope.measure.target import TargetSpec


class Interrupted(Exception):
    """Ctrl-C after the gathered loops were saved."""


def interrupted(run: Run) -> bool:
    """Ctrl-C cut the loops short, or came while the run was being finished."""
    return bool(run.observations.get("interrupted")
                or run.observations.get("interrupted_while_finishing"))


def trace_worker(target: str, settings: Settings, outputs: Outputs, python: str | None,
                 quiet: bool) -> None:
    """`leakscope trace`: run the loop under tracing, show each loop and the verdict, save."""
    from leakscope.measure import target as targetmod
    from leakscope.render.console import print_summary

    spec = targetmod.parse(target)
    outputs.check()
    use_interpreter(settings, choose_python(python))

    def show_verdict(run: Run) -> None:
        console.print()
        print_summary(console, run)

    run, saved, failure = trace_and_save(
        spec, settings, outputs.json_path, "progress" if quiet else "live", show_verdict
    )
    print_dim(f"run file: {saved}")
    if outputs.html_path is not None:
        from leakscope.render.html import write_html

        # The run was made here, now: its source is this directory's and the target's.
        roots = [Path.cwd(), *([Path(spec.path).parent] if spec.path else [])]
        print_dim(f"HTML report: {write_html(run, outputs.html_path, source_roots=roots)}")
    if failure is not None:
        raise failure
    if interrupted(run):
        raise Interrupted
    assert run.verdict is not None
    if outputs.fail_on_leak and run.verdict.leak:
        raise typer.Exit(EXIT_LEAK)


def trace_and_save(
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
    from leakscope.drive.supervisor import Interrupts
    from leakscope.drive.supervisor import trace as run_trace
    from leakscope.render.console import LiveLoopPrinter, ProgressObserver

    failure: WorkerError | None = None
    with Interrupts(say) as interrupts:
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
        locator_note = (run.observations.get("locator") or {}).get("note")
        if locator_note:
            note(locator_note)
        analyse(run)
        skipped = skipped_holder_search(run)
        if skipped:
            note(skipped)
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


def skipped_holder_search(run: Run) -> str:
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
