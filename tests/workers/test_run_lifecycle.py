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


PEAK_REPORTER = textwrap.dedent(
    """
    import sys
    import leakscope

    def own_peak():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

    KEPT = []
    for i in range(int(sys.argv[2])):
        KEPT.append([str(n) for n in range(20)])
        if i == int(sys.argv[3]):
            spike = b"x" * (96 << 20)   # one unit that spikes, then frees it
            del spike
        leakscope.tick()
    with open(sys.argv[1], "w") as out:
        out.write(str(own_peak()))
    """
)


def test_the_peak_is_the_workers_own_not_leakscopes(tmp_path):
    """The worker's peak, not that of the leakscope process it was started from:
    ru_maxrss keeps the pre-exec image's high-water mark across exec, so a
    steady worker seemed to have "spiked" to leakscope's own size."""
    script = _script(tmp_path, "steady.py", PEAK_REPORTER)
    out, peak_file = tmp_path / "run.json", tmp_path / "peak.txt"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script),
                   str(peak_file), "300", "-1")
    assert proc.returncode == 0, proc.stderr
    own = int(peak_file.read_text())
    (process,) = load_json(out)["processes"]
    reported = process["process"]["peak_rss_bytes"]
    # What the worker itself reads, give or take the final save after it.
    assert own <= reported <= own + (2 << 20), (own, reported)
    assert "spiked" not in proc.stdout, proc.stdout


def test_a_real_spike_is_still_reported(tmp_path):
    script = _script(tmp_path, "spiky.py", PEAK_REPORTER)
    out, peak_file = tmp_path / "run.json", tmp_path / "peak.txt"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(script),
                   str(peak_file), "300", "40")
    assert proc.returncode == 0, proc.stderr
    (process,) = load_json(out)["processes"]
    assert process["process"]["peak_rss_bytes"] >= 96 << 20
    assert "one unit spiked and was freed" in proc.stdout, proc.stdout
