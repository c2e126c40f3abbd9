"""The Assembler: messages in, Run out, for the trace, in-process and worker paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from leakscope.drive.assemble import Assembler
from leakscope.drive.launcher import ProcessLog, process_run
from leakscope.model import runfile, wire
from leakscope.model.runfile import LineDelta, Loop, new_run
from leakscope.model.settings import Settings

APP = """\
REGISTRY = []


def handle(i):
    REGISTRY.append(str(i) * 40)
"""


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def _loop(index: int, warmup: bool = False, **figures: Any) -> dict[str, Any]:
    return {"index": index, "warmup": warmup, "phase": "warmup" if warmup else "measure",
            "traced_bytes": 1000 + 100 * index, "traced_blocks": 10 + index,
            "rss_bytes": 1 << 20, "seconds": 0.01, **figures}


def trace_messages(app: Path, measured: int = 6) -> list[dict[str, Any]]:
    """What leakscope.measure.harness sends for a worker keeping 100 bytes per loop at app.py:5."""
    messages: list[dict[str, Any]] = [
        wire.first("started", python="3.99.0", library_roots=[], own_dirs=[]),
        {"t": "loaded"},
        {"t": "loop", "loop": _loop(0, warmup=True), "changes": []},
        {"t": "loop", "loop": _loop(1, warmup=True), "changes": []},
        {"t": "measuring", "warmup_loops": 2},
    ]
    for i in range(2, 2 + measured):
        messages.append({"t": "loop", "loop": _loop(i),
                         "changes": [[str(app), 5, 100, 1], [str(app), 1, 8 * (i % 2), 0]]})
        if i == 4:
            messages.append({"t": "checkpoint", "loops_done": 5,
                             "observation": {"gc_objects": 1234}})
    messages += [
        {"t": "gathered"},
        {"t": "final", "outcome": {"status": "done"}, "final": {
            "gc_enabled": True, "gc_collections": 3, "harness_seconds": 0.5,
            "malloc_counter": True, "detection": {}, "other_threads_max": 0, "locator": {},
            "tracebacks": [[[str(app), 5], [[str(app), 5], [str(app), 9]]]],
            "gc_final": {"bytes_before": 600, "bytes_after": 600, "objects_collected": 0,
                         "freed_by_line": [], "kept_by_line": [[str(app), 5, 600]]},
        }},
    ]
    return messages


class Seen:
    """A live observer that keeps what it was told."""

    def __init__(self) -> None:
        self.warmup: int | None = None
        self.phases: list[str] = []
        self.loops: list[tuple[Loop, list[LineDelta]]] = []

    def on_measuring(self, warmup_loops: int) -> None:
        self.warmup = warmup_loops

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        self.phases.append(phase)

    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None:
        self.loops.append((loop, changes))


def _assemble(messages: list[dict[str, Any]], cwd: Path, observer: Any = None) -> Assembler:
    assembler = Assembler(new_run("app.py:handle", {"iterations": 6}), 5, str(cwd), observer)
    for message in messages:
        assembler.feed(message)
    return assembler


def test_trace_messages_make_a_run(app: Path) -> None:
    seen = Seen()
    assembler = _assemble(trace_messages(app), app.parent, seen)
    assert assembler.loaded and assembler.gathered and assembler.outcome == {"status": "done"}
    run = assembler.finish()
    assert run.python == "3.99.0"
    assert run.settings["warmup_used"] == 2 and seen.warmup == 2
    assert len(run.loops) == 8 and len(run.measured) == 6
    assert run.loops[4].gc_objects == 1234  # the checkpoint's count, on the loop it followed
    top = run.loops[3].top  # largest change first, its path relative to cwd
    assert [(change.file, change.line) for change in top] == [("app.py", 5), ("app.py", 1)]
    kept = {(site.file, site.line): site for site in run.sites}
    site = kept[("app.py", 5)]
    assert site.kept_bytes == 600 and site.kept_blocks == 6
    assert site.series == [100, 200, 300, 400, 500, 600]
    assert site.function == "handle" and site.user_frame is not None
    assert [frame.line for frame in site.traceback] == [5, 9]
    obs = run.observations
    assert obs.gc_enabled is True and obs["gc_collections"] == 3
    assert obs.gc_final is not None and obs.gc_final["kept_by_line"] == [["app.py", 5, 600]]
    assert obs.elapsed_seconds == 0.08 and obs.cwd == str(app.parent)
    assert len(seen.loops) == 8 and seen.loops[2][1][0] == LineDelta("app.py", 5, 100, 1)
    assert run.process is None


def test_phases_say_after_which_loop_on_every_path(app: Path) -> None:
    messages = trace_messages(app)
    messages.insert(6, {"t": "phase", "phase": "locate", "info": {"after_units": 3}})
    run = _assemble(messages, app.parent).finish()
    assert run.observations["phases"] == [{"phase": "locate", "after_loops": 3,
                                           "after_units": 3}]


def test_the_same_messages_make_the_same_run_off_the_wire(app: Path) -> None:
    """Straight from the collector (pytest) or through a pipe (trace): one Run."""
    messages = trace_messages(app)
    direct = _assemble(messages, app.parent).finish()
    decoder = wire.Decoder()
    data = b"".join(wire.encode(message) for message in messages)
    read = _assemble(list(decoder.messages(data)), app.parent).finish()
    one, other = runfile.to_dict(direct), runfile.to_dict(read)
    for data_ in (one, other):
        data_.pop("started_at")
    assert one == other


def test_in_process_events_through_the_message_observer(app: Path) -> None:
    """The pytest plugin's collector calls the observer with tuples; the Run is the same."""
    assembler = Assembler(new_run("<callable>"), 5, str(app.parent))
    observer = wire.MessageObserver(assembler.feed)
    observer.on_loop(_loop(0, warmup=True), [])
    observer.on_measuring(1)
    for i in range(1, 4):
        observer.on_loop(_loop(i), [(str(app), 5, 100, 1)])
    observer.on_checkpoint(3, {"gc_objects": 9})
    run = assembler.finish({"gc_enabled": True})
    assert len(run.measured) == 3 and run.observations.gc_enabled is True
    assert run.sites[0].series == [100, 200, 300]


def test_an_unknown_kind_from_a_newer_writer_is_skipped(app: Path) -> None:
    messages = trace_messages(app)
    messages.insert(3, {"t": "telemetry", "x": 1})
    assert len(_assemble(messages, app.parent).finish().loops) == 8


# ------------------------------------------------------------ worker path


def worker_messages(app: Path, units: int, final: bool = True) -> list[dict[str, Any]]:
    """What an armed process of `leakscope run` writes to its events file."""
    messages: list[dict[str, Any]] = [
        wire.first("hello", pid=4242, parent_pid=4241, role="python w.py",
                   command="python w.py", unit="unit", framework=None, info={},
                   started_at=1.0, python="3.98.0", library_roots=[], own_dirs=[]),
        {"t": "process", "role": "rq work horse", "unit": "job", "framework": "rq",
         "info": {"max_jobs": 10}},
    ]
    for i in range(units):
        warm = i < 2
        messages.append({"t": "loop", "loop": _loop(i, warmup=warm, peak_rss_bytes=2 << 20),
                         "changes": [] if warm else [[str(app), 5, 100, 1]]})
    messages.append({"t": "lines", "changes": [[str(app), 5, 50, 1]]})
    if final:
        messages.append({"t": "final", "outcome": {"status": "done", "reason": "SIGTERM"},
                         "final": {"rss_bytes": 3 << 20, "peak_rss_bytes": 4 << 20,
                                   "units": units}})
    return messages


def _write(path: Path, messages: list[dict[str, Any]], tail: bytes = b"") -> None:
    path.write_bytes(b"".join(wire.encode(message) for message in messages) + tail)


def test_worker_messages_make_a_run_with_its_process(app: Path) -> None:
    assembler = Assembler(new_run(""), 5, str(app.parent))
    for message in worker_messages(app, units=8):
        assembler.feed(message)
    run = assembler.finish()
    assert run.target == "python w.py" and run.python == "3.98.0"
    assert run.process is not None
    assert run.process["pid"] == 4242 and run.process["role"] == "rq work horse"
    assert run.process["unit"] == "job" and run.process["max_jobs"] == 10
    assert run.process["units"] == 8 and run.process["ended_by"] == "SIGTERM"
    assert run.process["rss_bytes"] == 3 << 20 and run.process["peak_rss_bytes"] == 4 << 20
    # The late lines belong to the last measured unit.
    assert run.sites[0].series[-1] == 650 and run.sites[0].kept_blocks == 7
    assert "unsaved_end" not in run.observations


def test_a_worker_that_dies_mid_run_is_a_partial_run(app: Path, tmp_path: Path) -> None:
    """SIGKILL mid-write: no final message, its last line cut; every whole unit counts."""
    events = tmp_path / "4242-1.jsonl"
    _write(events, worker_messages(app, units=12, final=False), tail=b'{"t":"loop","lo')
    log = ProcessLog(events, str(app.parent), 5)
    log.poll()
    assert log.hello is not None and log.units == 12 and not log.finished
    run = process_run(log, Settings(iterations=10, warmup=2))
    assert run.observations["unsaved_end"] is True
    assert run.process is not None and run.process["units"] == 12
    assert "ended_by" not in run.process
    assert run.verdict is not None and len(run.measured) == 10
    assert log.unreadable_lines == 0  # a line still being written is not yet unreadable


def test_garbage_in_an_events_file_is_skipped_and_counted(app: Path, tmp_path: Path) -> None:
    """A worker writing on a descriptor it inherited must not break `leakscope run`."""
    events = tmp_path / "4242-1.jsonl"
    messages = worker_messages(app, units=6)
    lines = [wire.encode(message) for message in messages]
    lines.insert(3, b"garbage from the worker\n")
    lines.insert(5, b'{"t":"loop"}\n')
    lines.insert(6, b'{"t":"final","outcome":5}\n')
    events.write_bytes(b"".join(lines))
    log = ProcessLog(events, str(app.parent), 5)
    log.poll()
    assert log.units == 6 and log.finished and log.unreadable_lines == 3
    run = process_run(log, Settings(iterations=4, warmup=2))
    assert run.process is not None and run.process["unreadable_lines"] == 3


def test_an_events_file_of_an_unknown_major_version_is_refused(app: Path,
                                                                 tmp_path: Path) -> None:
    events = tmp_path / "4242-1.jsonl"
    messages = worker_messages(app, units=3)
    messages[0]["v"] = f"{wire.MAJOR + 1}.0"
    _write(events, messages)
    log = ProcessLog(events, str(app.parent), 5)
    log.poll()
    assert log.gone and log.hello is None
    assert log.refused is not None and f"wire version {wire.MAJOR + 1}.0" in log.refused


def test_lines_before_the_hello_are_not_a_process(app: Path, tmp_path: Path) -> None:
    events = tmp_path / "4242-1.jsonl"
    _write(events, [{"t": "loop", "loop": _loop(0), "changes": []}])
    log = ProcessLog(events, str(app.parent), 5)
    log.poll()
    assert log.hello is None and log.units == 0


# ------------------------------------------------------------- trace's pipe


def _pump_bytes(data: bytes, app: Path, assembler: Assembler | None = None) -> Assembler:
    """What trace's reader makes of ``data`` written to its pipe by the child."""
    from leakscope.drive.supervisor import _pump

    assembler = assembler or Assembler(new_run("app.py"), 5, str(app.parent))
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
        os.close(write_fd)
        write_fd = -1
        _pump(read_fd, wire.Decoder(), assembler, timeout=5.0)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    return assembler


def test_the_trace_pipe_keeps_the_messages_before_garbage(app: Path) -> None:
    messages = trace_messages(app)[:6]
    data = b"".join(wire.encode(message) for message in messages) + b'{"t":"loop"}\n'
    assembler = Assembler(new_run("app.py"), 5, str(app.parent))
    with pytest.raises(wire.WireError, match="loop message without 'loop'"):
        _pump_bytes(data, app, assembler)
    assert len(assembler.run.loops) == 3 and assembler.loaded  # a partial run to save


def test_the_trace_pipe_refuses_an_unknown_major_version(app: Path) -> None:
    started = {**trace_messages(app)[0], "v": f"{wire.MAJOR + 1}.0"}
    with pytest.raises(wire.VersionError, match=f"reads {wire.MAJOR}.x"):
        _pump_bytes(wire.encode(started), app)


def test_the_trace_pipe_calls_a_line_cut_at_the_end_garbage(app: Path) -> None:
    with pytest.raises(wire.WireError, match="cut off"):
        _pump_bytes(wire.encode(trace_messages(app)[0]) + b'{"t":"lo', app)
