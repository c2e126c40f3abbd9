"""Run.observations: typed facts with dict-like access, and the run file's object unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from leakscope.model import runfile
from leakscope.model.errors import RunFileError
from leakscope.model.runfile import Observations, Run


def _run(**observations: object) -> Run:
    return Run(target="w.py", python="3.12", started_at="2026-01-01T00:00:00Z", settings={},
               observations=dict(observations))


def test_a_dict_becomes_typed_facts_and_unknown_keys_stay_in_extra() -> None:
    run = _run(gc_enabled=False, interrupted=True, from_elsewhere={"a": 1})
    obs = run.observations
    assert isinstance(obs, Observations)
    assert obs.gc_enabled is False and obs.interrupted is True
    assert obs.extra == {"from_elsewhere": {"a": 1}}


def test_dict_like_access_reads_and_writes_the_same_facts() -> None:
    obs = Observations()
    assert "interrupted" not in obs and obs.get("interrupted") is None
    assert obs.get("gc_enabled", True) is True
    with pytest.raises(KeyError):
        obs["interrupted"]
    obs["interrupted"] = True
    assert obs.interrupted is True and "interrupted" in obs and obs["interrupted"] is True
    obs.setdefault("phases", []).append({"phase": "locate"})
    assert obs.phases == [{"phase": "locate"}]
    obs["attach"] = {"stopped_because": "units"}
    obs["attach"]["unit_note"] = "time slices"
    assert obs.attach == {"stopped_because": "units", "unit_note": "time slices"}
    obs["novel"] = 3
    assert obs.extra == {"novel": 3} and obs["novel"] == 3
    assert list(obs) == ["attach", "interrupted", "phases", "novel"]
    assert len(obs) == 4 and obs == {"attach": obs.attach, "interrupted": True,
                                     "phases": obs.phases, "novel": 3}
    del obs["interrupted"], obs["novel"]
    assert "interrupted" not in obs and obs.extra == {}
    assert obs.pop("phases") == [{"phase": "locate"}] and obs.pop("phases", None) is None


def test_a_deep_copy_is_independent() -> None:
    obs = Observations.from_dict({"gc_final": {"bytes_after": 3}, "x": [1]})
    other = copy.deepcopy(obs)
    other["gc_final"]["bytes_after"] = 4
    other["x"].append(2)
    assert obs["gc_final"] == {"bytes_after": 3} and obs["x"] == [1]


def test_the_run_file_object_holds_the_observed_facts_only(tmp_path: Path) -> None:
    run = _run(cwd="/src", gc_enabled=True, from_elsewhere=[1, 2])
    parent = _run(interrupted=True)
    parent.processes = [run]
    data = runfile.to_dict(parent)
    assert data["observations"] == {"interrupted": True}
    assert data["processes"][0]["observations"] == {"cwd": "/src", "gc_enabled": True,
                                                    "from_elsewhere": [1, 2]}
    path = runfile.save(parent, tmp_path / "run.json")
    loaded = runfile.load(path)
    assert loaded.processes[0].observations == run.observations
    assert json.loads(path.read_text())["processes"][0]["observations"]["from_elsewhere"] == [
        1, 2]


def test_a_known_fact_of_the_wrong_type_is_refused_at_load(tmp_path: Path) -> None:
    path = runfile.save(_run(cwd="/src"), tmp_path / "run.json")
    data = json.loads(path.read_text())
    data["observations"]["gc_enabled"] = "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(RunFileError, match=r"run.observations.gc_enabled is a string"):
        runfile.load(path)


def test_foreign_keys_nested_too_deeply_are_refused_at_load(tmp_path: Path) -> None:
    path = runfile.save(_run(cwd="/src"), tmp_path / "run.json")
    data = json.loads(path.read_text())
    deep: list[object] = []
    for _ in range(runfile.MAX_FREE_DEPTH + 2):
        deep = [deep]
    data["observations"]["foreign"] = deep
    path.write_text(json.dumps(data))
    with pytest.raises(RunFileError, match="nested too deeply"):
        runfile.load(path)
