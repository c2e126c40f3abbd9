"""`leakscope run` as a command-line tool: the worker's own output, peak and end.

The command's output passes through, its peak is its own, and nothing of
leakscope's (processes, armed interpreters, the run directory) outlives the run.
"""

from __future__ import annotations

import sys
import textwrap

from tests.conftest import load_json, run_cli

CLEAN_TICKS = textwrap.dedent(
    """
    import sys
    import leakscope

    for i in range(int(sys.argv[1])):
        data = [str(n) for n in range(50)]
        leakscope.tick()
    """
)


def _script(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_summary_counts_processes_as_the_table_does(tmp_path):
    """--sample auto watches a clean process with its counters and never traces it:
    the verdict must not say "1 processes traced" over a table that shows none."""
    script = _script(tmp_path, "clean.py", CLEAN_TICKS)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script), "150")
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    (process,) = run["processes"]
    assert process["process"]["traced_units"] == 0
    summary = run["verdict"]["summary"]
    assert "1 process watched, none traced" in summary, summary
    assert "processes traced" not in proc.stdout
