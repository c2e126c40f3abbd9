"""The run file: save/load round trip, atomic save, and every way ``load`` refuses a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from leakscope.model import runfile
from leakscope.model.errors import EXIT_USAGE, RunFileError
from leakscope.model.runfile import SCHEMA, Frame, Holder, LineDelta, Loop, Run, Site, Verdict


def full_run() -> Run:
    """A run with every nested type filled in, including a child process."""
    frame = Frame("scenarios/static_array.py", 22, "handle")
    run = Run(
        target="scenarios/static_array.py:iteration",
        python="3.11.7",
        started_at="2026-11-22T23:00:00Z",
        settings={"iterations": 3, "warmup": 1, "frames": 10, "worker_args": ["a", "b"]},
        loops=[
            Loop(index=0, warmup=True, rss_bytes=40_000_000, allocated_blocks=1000,
                 seconds=0.001),
            *[
                Loop(index=i, warmup=False, traced_bytes=100 * i, traced_blocks=i,
                     rss_bytes=40_000_000 + 4096 * i, net_bytes=100, native_bytes=12,
                     tracemalloc_bytes=2048, allocated_blocks=1000 + i, gc_collections=0,
                     seconds=0.0005, gc_objects=5000 if i == 3 else None,
                     top=[LineDelta("scenarios/static_array.py", 22, 100, 1)])
                for i in range(1, 4)
            ],
        ],
        verdict=Verdict(
            leak=True, kind="reachable", bytes_per_iteration=100.0, blocks_per_iteration=1.0,
            confidence=0.97, summary="Leak (reachable): 100 B/iter", iterations_to_limit=5_000_000,
            memory_limit_bytes=512 * 1024**2, projection="At 100 B/iter ...",
            evidence={"p_value": 0.03, "scale": 1},
        ),
        sites=[
            Site(file=frame.file, line=frame.line, function=frame.function,
                 traceback=[frame, Frame("scenarios/static_array.py", 26, "iteration")],
                 user_frame=frame, bytes_per_iteration=100.0, blocks_per_iteration=1.0,
                 growing=True, kept_bytes=300, kept_blocks=3, series=[100, 200, 300]),
            Site(file="<frozen abc>", line=1, function="", traceback=[], user_frame=None,
                 bytes_per_iteration=0.0, blocks_per_iteration=0.0, growing=False),
        ],
        holders=[
            Holder(path="static_array.Test.array", type="list", role="registry",
                   items_first=1, items_last=3, items_per_iteration=1.0,
                   item_types={"str": 3}, grown_at="scenarios/static_array.py:22",
                   items_series=[1, 2, 3]),
        ],
        leakscope_version="0.1.0",
        finished_at="2026-11-22T23:00:01Z",
        platform="Linux x86_64",
        observations={"gc_enabled": True, "gc_final": {"bytes_before": 300, "bytes_after": 300}},
        bounded=[{"path": "x.cache", "type": "dict", "bound": 16, "items": 4}],
    )
    child = runfile.from_dict(runfile.to_dict(run))
    child.process = {"pid": 42, "parent_pid": 1, "role": "worker", "command": "python w.py"}
    run.processes = [child]
    return run


def test_round_trip(tmp_path: Path) -> None:
    run = full_run()
    path = runfile.save(run, tmp_path / "run.json")
    assert runfile.load(path) == run


def test_round_trip_minimal(tmp_path: Path) -> None:
    run = Run(target="w.py", python="3.12.1", started_at="2026-01-01T00:00:00Z", settings={})
    assert runfile.load(runfile.save(run, tmp_path / "run.json")) == run


def test_file_opens_with_the_contract_fields(tmp_path: Path) -> None:
    runfile.save(full_run(), tmp_path / "run.json")
    data = json.loads((tmp_path / "run.json").read_text())
    assert list(data)[:4] == ["schema", "target", "python", "started_at"]
    assert data["schema"] == SCHEMA
    assert data["sites"][0]["user_frame"] == {
        "file": "scenarios/static_array.py", "line": 22, "function": "handle"
    }
    assert "processes" in data and "process" not in data


def test_fields_from_a_newer_writer_are_ignored(tmp_path: Path) -> None:
    data = runfile.to_dict(full_run())
    data["added_later"] = {"x": 1}
    data["loops"][1]["added_later"] = 3
    data["verdict"]["added_later"] = "y"
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    assert runfile.load(path) == full_run()


def test_integral_floats_are_accepted_for_integers(tmp_path: Path) -> None:
    data = runfile.to_dict(full_run())
    data["loops"][1]["traced_bytes"] = 100.0
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    assert runfile.load(path).loops[1].traced_bytes == 100


# --------------------------------------------------------------- atomic save


def test_save_leaves_only_the_file(tmp_path: Path) -> None:
    runfile.save(full_run(), tmp_path / "run.json")
    runfile.save(full_run(), tmp_path / "run.json")  # and over an existing one
    assert os.listdir(tmp_path) == ["run.json"]


def test_save_creates_parent_directories(tmp_path: Path) -> None:
    path = runfile.save(full_run(), tmp_path / "a" / "b" / "run.json")
    assert path.exists()
    assert os.listdir(tmp_path / "a" / "b") == ["run.json"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    runfile.save(full_run(), path)
    before = path.read_bytes()
    broken = full_run()
    broken.observations["not json"] = object()  # json.dump fails half-way through
    with pytest.raises(TypeError):
        runfile.save(broken, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.json"]


def test_save_into_a_directory_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").mkdir()
    with pytest.raises(RunFileError) as info:
        runfile.save(full_run(), tmp_path / "run.json")
    assert "cannot write run file" in info.value.message
    assert sorted(os.listdir(tmp_path)) == ["run.json"]


def test_save_under_a_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(RunFileError) as info:
        runfile.save(full_run(), tmp_path / "plain" / "run.json")
    assert "cannot write run file" in info.value.message


# ---------------------------------------------------------------- rejects


def _reject(path: Path, says: str) -> None:
    with pytest.raises(RunFileError) as info:
        runfile.load(path)
    error = info.value
    assert error.exit_code == EXIT_USAGE
    assert "\n" not in error.message
    assert error.message.startswith(str(path)), error.message
    assert says in error.message, error.message


def test_load_missing(tmp_path: Path) -> None:
    _reject(tmp_path / "nope.json", "no such run file")


def test_load_directory(tmp_path: Path) -> None:
    _reject(tmp_path, "is a directory")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON (line 1, column 2)"),
        (b'{"schema": "leakscope.run/1", "target": ', "not JSON"),
        (b"\xff\xfe\x00{", "cannot read run file"),
        (b"[]", "top level is not an object"),
        (b'"leakscope.run/1"', "top level is not an object"),
        (b"null", "top level is not an object"),
        (b"{}", "no schema field"),
        (b'{"schema": "coverage.py/7.4"}', "schema 'coverage.py/7.4'"),
        (b'{"schema": "leakscope.run/2"}', "schema 'leakscope.run/2'"),
        (b'{"schema": 1}', "schema 1"),
    ],
    ids=["empty", "not-json", "truncated", "not-utf8", "list", "string", "null", "no-schema",
         "foreign", "future-version", "schema-not-string"],
)
def test_load_rejects_content(content: bytes, says: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    _reject(path, says)


def test_load_rejects_a_truncated_real_file(tmp_path: Path) -> None:
    path = runfile.save(full_run(), tmp_path / "run.json")
    text = path.read_text()
    for cut in (1, len(text) // 3, len(text) // 2, len(text) - 3):
        path.write_text(text[:cut])
        _reject(path, "not JSON")


def _without(*keys: Any):
    def change(data: dict) -> None:
        *parents, last = keys
        for key in parents:
            data = data[key]
        del data[last]
    return change


def _setting(value: Any, *keys: Any):
    def change(data: dict) -> None:
        *parents, last = keys
        for key in parents:
            data = data[key]
        data[last] = value
    return change


@pytest.mark.parametrize(
    ("change", "says"),
    [
        # missing fields
        (_without("target"), "'target' missing"),
        (_without("loops"), "'loops' missing"),
        (_without("settings"), "'settings' missing"),
        (_without("loops", 1, "index"), "loops[1] has no integer index"),
        (_without("loops", 1, "warmup"), "run.loops[1] has no 'warmup'"),
        (_without("verdict", "leak"), "verdict has no boolean 'leak'"),
        (_without("verdict", "kind"), "run.verdict has no 'kind'"),
        (_without("sites", 0, "line"), "run.sites[0] has no 'line'"),
        (_without("sites", 0, "traceback", 0, "file"), "run.sites[0].traceback[0] has no 'file'"),
        (_without("holders", 0, "path"), "run.holders[0] has no 'path'"),
        (_without("processes", 0, "target"), "run.processes[0] has no 'target'"),
        # wrong types
        (_setting("w.py", "settings"), "'settings' missing or not a dict"),
        (_setting(3, "target"), "'target' missing or not a str"),
        (_setting({"0": {}}, "loops"), "'loops' missing or not a list"),
        (_setting("1", "loops", 1, "index"), "loops[1] has no integer index"),
        (_setting("yes", "verdict", "leak"), "verdict has no boolean 'leak'"),
        (_setting([], "verdict"), "verdict has no boolean 'leak'"),
        (_setting("12", "loops", 1, "traced_bytes"), "run.loops[1].traced_bytes is a string"),
        (_setting(1.5, "loops", 1, "traced_bytes"), "run.loops[1].traced_bytes is a number"),
        (_setting(1, "loops", 1, "warmup"), "run.loops[1].warmup is a number, expected bool"),
        (_setting({"file": "x"}, "loops", 1, "top"), "run.loops[1].top is an object"),
        (_setting("high", "verdict", "confidence"), "run.verdict.confidence is a string"),
        (_setting(None, "verdict", "summary"), "run.verdict.summary is null, expected str"),
        (_setting(None, "verdict", "kind"), "run.verdict.kind is null"),
        (_setting(True, "verdict", "bytes_per_iteration"), "bytes_per_iteration is a boolean"),
        (_setting("p", "verdict", "evidence"), "run.verdict.evidence is a string"),
        (_setting([3], "sites"), "run.sites[0] is a number, expected an object"),
        (_setting(5, "sites", 0, "user_frame"), "run.sites[0].user_frame is a number"),
        (_setting(["1"], "sites", 0, "series"), "run.sites[0].series[0] is a string"),
        (_setting("x", "holders"), "run.holders is a string, expected a list"),
        (_setting("1", "holders", 0, "items_first"), "run.holders[0].items_first is a string"),
        (_setting([], "observations"), "run.observations is a list, expected an object"),
        (_setting("x", "processes", 0, "loops", 1, "seconds"),
         "run.processes[0].loops[1].seconds is a string"),
    ],
    ids=lambda v: None if callable(v) else v.split(" is ")[0].split(" has ")[0],
)
def test_load_rejects_fields(change, says: str, tmp_path: Path) -> None:
    data = runfile.to_dict(full_run())
    change(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    _reject(path, says)
