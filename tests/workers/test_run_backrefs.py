"""A holder too deep for the forward walk, in a real worker's window: named by the
back-reference search, with the rate its items grew at.

The search runs once, in the window's closing copy, so it sees one length. Its
growth is the items made while the window traced: before, such a holder printed
"+0 items/unit, 250 -> 250" although it grew by one item a unit.
"""

from __future__ import annotations

import sys

import pytest

from tests.conftest import ROOT, load_json, run_cli

DEEP_WORKER = f"""
import sys
sys.path.insert(0, {str(ROOT / "scenarios")!r})
import leakscope
import deep_registry

for _ in range(400):
    deep_registry.iteration()
    leakscope.tick()
"""


def test_a_holder_found_by_back_references_in_a_window_has_its_rate(tmp_path):
    worker = tmp_path / "deep_worker.py"
    worker.write_text(DEEP_WORKER)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--json", str(out), "--", sys.executable, str(worker),
                   env={"COLUMNS": "120"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = load_json(out)
    (holder,) = run["holders"][:1]
    assert holder["found_by"] == "backrefs", holder
    assert holder["path"].endswith(".backend.store.entries"), holder["path"]
    assert holder["items_per_iteration"] == pytest.approx(1.0), holder
    first, last = holder["items_series"]
    traced = run["processes"][0]["process"]["traced_units"]
    assert last - first == traced, (holder, traced)
    assert f"+1 items/unit, {first} → {last}" in proc.stdout, proc.stdout
