"""`report`, `html` and `diff`: what the commands do with run files already saved."""

from __future__ import annotations

from pathlib import Path

import typer

from leakscope.cli.output import console, err_console, print_dim, print_plain
from leakscope.model import runfile
from leakscope.model.errors import EXIT_LEAK, LeakscopeError
from leakscope.model.runfile import Run
from leakscope.render.safe import printable


def load_analysed(path: Path) -> Run:
    """A saved run that has a verdict; one error line otherwise."""
    run = runfile.load(path)
    if run.verdict is None:
        raise LeakscopeError(f"{path}: the run has no verdict (was it analysed?)")
    return run


def report(run_path: Path) -> None:
    """Print the verdict and details of a saved run."""
    from leakscope.render.console import print_summary

    run = load_analysed(run_path)
    print_dim(f"{run.target} · Python {run.python} · {run.started_at}")
    print_summary(console, run)


def html(run_path: Path, output: Path | None, open_page: bool) -> None:
    """Write the run's self-contained HTML report (default reports/<run name>.html)."""
    from leakscope.render.html import run_tree, write_html

    run = runfile.load(run_path)
    default = Path("reports") / f"{run_path.stem}.html"
    written = write_html(run, output if output is not None else default,
                         source_roots=[run_tree(run_path)])
    print_plain(printable(str(written)))
    if open_page:
        import webbrowser

        if not webbrowser.open(written.resolve().as_uri()):
            err_console.print("leakscope: no web browser found to open it", markup=False)


def diff(base_path: Path, new_path: Path, fail_on_new: bool) -> None:
    """Compare two runs; exit 1 with ``fail_on_new`` when NEW grows something BASE did not."""
    from leakscope.analysis.compare import compare
    from leakscope.render.text import ComparisonText

    comparison = compare(load_analysed(base_path), load_analysed(new_path))
    print_plain(ComparisonText().render(comparison))
    if fail_on_new and comparison.has_new:
        raise typer.Exit(EXIT_LEAK)
