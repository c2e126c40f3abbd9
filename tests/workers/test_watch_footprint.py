"""What watching a worker leaves in the count it watches (leakscope must not change
what it observes).

A watched process reads ``sys.getallocatedblocks()`` and runs the watch rule on it
now and then. The rule's own floats, lists and tuples are freed into the
interpreter's free lists, which keep them: before the rule was primed at the
start of measuring, an idle worker's count stepped up 28 and 84 blocks at its
first two checks (112 in all; 13 now), which the rule then read, in the later
half of its series, as the worker's growth.
"""

from __future__ import annotations

import sys

from tests.conftest import load_json, run_cli

IDLE = "import leakscope\nfor _ in range({units}):\n    leakscope.tick()\n"


def test_an_idle_worker_s_watched_count_does_not_step_at_the_rules_checks(tmp_path):
    worker = tmp_path / "idle.py"
    worker.write_text(IDLE.format(units=1500))
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(worker))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (process,) = load_json(out)["processes"]
    assert process["process"]["traced_units"] == 0
    measured = [loop["allocated_blocks"] for loop in process["loops"]
                if not loop["warmup"] and loop["allocated_blocks"] is not None]
    # Checks at the 100th unit and every 400 after: the count read after them stays
    # within a few blocks of the first measured unit's (112 above it before).
    assert len(measured) > 100
    assert max(measured) - measured[0] <= 30, measured[::10]
