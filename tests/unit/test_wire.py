"""The wire format: every kind round-trips; any line that is not one is a one-line WireError."""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from leakscope.model import wire
from tests.conftest import ROOT

# One well-formed message of every kind, as the harness or an agent writes it.
SAMPLES: dict[str, dict[str, Any]] = {
    "started": wire.first("started", python="3.12.1", library_roots=["/usr/lib/python3.12"],
                          own_dirs=["/src/leakscope"]),
    "hello": wire.first("hello", pid=12, parent_pid=1, role="celery worker",
                        command="celery -A proj worker", unit="task", framework="celery",
                        info={"concurrency": 2}, started_at=1700000000.5, python="3.12.1",
                        library_roots=[], own_dirs=[]),
    "loaded": {"t": "loaded"},
    "measuring": {"t": "measuring", "warmup_loops": 10},
    "phase": {"t": "phase", "phase": "locate", "info": {"after_units": 40}},
    "loop": {"t": "loop", "loop": {"index": 11, "warmup": False, "traced_bytes": 1024,
                                   "seconds": 0.001},
             "changes": [["app.py", 17, 1392, 3], ["lib.py", 4, -56, -1]]},
    "checkpoint": {"t": "checkpoint", "loops_done": 20, "observation": {"gc_objects": 5000}},
    "gathered": {"t": "gathered"},
    "final": {"t": "final", "outcome": {"status": "done"}, "final": {"gc_enabled": True}},
    "error": {"t": "error", "code": 3, "message": "w.py: worker raised ValueError",
              "traceback": "Traceback ...\n"},
    "process": {"t": "process", "role": "rq worker", "unit": "job", "framework": "rq",
                "info": {"max_jobs": None}},
    "lines": {"t": "lines", "changes": [["app.py", 17, 464, 1]]},
    "holders": {"t": "holders", "report": {"checkpoints": 3}},
    "window": {"t": "window", "end": {"tracebacks": []}, "holders": None},
    "agent-error": {"t": "agent-error", "message": "RuntimeError: boom"},
}


def _line(message: Any) -> bytes:
    return wire.encode(message).rstrip(b"\n")


def _refused(line: bytes, **kwargs: Any) -> wire.WireError:
    with pytest.raises(wire.WireError) as caught:
        wire.decode(line, **kwargs)
    text = str(caught.value)
    assert "\n" not in text and text, text  # one line, always
    return caught.value


def test_every_kind_has_a_sample_and_a_doc() -> None:
    assert set(SAMPLES) == set(wire.KINDS)
    for kind in wire.KINDS.values():
        assert kind.doc and kind.sender in ("harness", "agent", "both"), kind.name


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_kind_round_trips(name: str) -> None:
    message = SAMPLES[name]
    assert wire.encode(message).endswith(b"\n") and wire.encode(message).count(b"\n") == 1
    assert wire.decode(_line(message)) == message


@pytest.mark.parametrize(("name", "field"), [
    (kind.name, key) for kind in wire.KINDS.values() for key in kind.required
])
def test_a_missing_required_field_is_named(name: str, field: str) -> None:
    message = copy.deepcopy(SAMPLES[name])
    del message[field]
    error = _refused(_line(message))
    assert f"{name} message without {field!r}" in str(error)


@pytest.mark.parametrize(("name", "field"), [
    (kind.name, key) for kind in wire.KINDS.values()
    for key in {**kind.required, **kind.optional}
])
def test_a_wrong_typed_field_is_named(name: str, field: str) -> None:
    message = copy.deepcopy(SAMPLES[name])
    message[field] = [] if not isinstance(message.get(field), list) else "text"
    if field == "v":
        message[field] = 1
    error = _refused(_line(message))
    assert repr(field) in str(error) or "version" in str(error), error


def test_a_boolean_is_not_a_number() -> None:
    error = _refused(_line({"t": "measuring", "warmup_loops": True}))
    assert "expected an integer" in str(error)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_extra_field_from_our_own_version_is_refused(name: str) -> None:
    message = {**SAMPLES[name], "surprise": 1}
    error = _refused(_line(message))
    assert "unknown field 'surprise'" in str(error)


def test_an_extra_field_from_a_newer_minor_version_is_dropped() -> None:
    newer = f"{wire.MAJOR}.{wire.MINOR + 1}"
    decoder = wire.Decoder()
    started = {**SAMPLES["started"], "v": newer, "surprise": 1}
    assert "surprise" not in decoder.decode(_line(started))
    assert decoder.version == newer
    loop = {**SAMPLES["loop"], "later": [1]}
    assert decoder.decode(_line(loop)) == SAMPLES["loop"]


def test_an_unknown_kind_is_refused_unless_a_newer_minor_sent_it() -> None:
    error = _refused(_line({"t": "telemetry", "x": 1}))
    assert "unknown message kind 'telemetry'" in str(error)
    decoder = wire.Decoder()
    decoder.decode(_line({**SAMPLES["started"], "v": f"{wire.MAJOR}.{wire.MINOR + 1}"}))
    assert decoder.decode(_line({"t": "telemetry", "x": 1}))["t"] == "telemetry"


@pytest.mark.parametrize("version", [f"{wire.MAJOR + 1}.0", "0.9"])
def test_an_unknown_major_version_is_refused_in_one_line(version: str) -> None:
    decoder = wire.Decoder()
    with pytest.raises(wire.VersionError) as caught:
        decoder.decode(_line({**SAMPLES["hello"], "v": version}))
    text = str(caught.value)
    assert "\n" not in text
    assert f"wire version {version}" in text and f"reads {wire.MAJOR}.x" in text


@pytest.mark.parametrize("version", ["1", "one.two", "1.2.3", ""])
def test_a_malformed_version_is_refused(version: str) -> None:
    with pytest.raises(wire.VersionError, match="not MAJOR.MINOR"):
        wire.decode(_line({**SAMPLES["started"], "v": version}))


@pytest.mark.parametrize(("line", "reason"), [
    (b"garbage", "not a JSON line"),
    (b"", "not a JSON line"),
    (b"\xff\xfe{}", "not a JSON line"),
    (b"[1]", "a JSON list, not an object"),
    (b'"t"', "a JSON string, not an object"),
    (b"{}", 'no "t"'),
    (b'{"t": 5}', 'no "t"'),
    (b'{"t":"final","outcome":5}', "final message's 'outcome' is a JSON number"),
    (b'{"t":"final","outcome":{},"final":{}}', "outcome has no status"),
    (b'{"t":"error"}', "error message without 'code'"),
    (b'{"t":"loop","loop":{"warmup":false},"changes":[]}', "loop.index"),
    (b'{"t":"loop","loop":{"index":1,"warmup":false},"changes":[["a",1,2]]}', "changes[0]"),
    (b'{"t":"loop","loop":{"index":1,"warmup":false},"changes":[[1,1,2,3]]}', "changes[0]"),
    (b'{"t":"loop","loop":{"index":1,"warmup":false,"__class__":1},"changes":[]}',
     "loop.__class__"),
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
])
def test_garbage_is_one_line_naming_the_reason(line: bytes, reason: str) -> None:
    error = _refused(line)
    assert reason in str(error), error
    assert len(str(error)) < 200  # the line itself is shown cut short


def test_a_huge_line_is_refused_before_it_is_parsed() -> None:
    line = _line({"t": "holders", "report": {"x": "y" * 5000}})
    error = _refused(line, limit=1000)
    assert "longer than any message (1000 bytes)" in str(error)
    decoder = wire.Decoder(limit=1000)
    with pytest.raises(wire.WireError, match="longer than any message"):
        decoder.lines(b"x" * 1500)  # no newline yet: it is not buffered for ever
    assert decoder.pending == b""


def test_the_decoder_joins_lines_split_across_reads() -> None:
    data = b"".join(wire.encode(SAMPLES[name]) for name in ("started", "loaded", "loop"))
    decoder = wire.Decoder()
    got = []
    for start in range(0, len(data), 7):
        got.extend(decoder.messages(data[start:start + 7]))
    decoder.close()
    assert got == [SAMPLES["started"], SAMPLES["loaded"], SAMPLES["loop"]]
    assert decoder.version == wire.VERSION


def test_a_stream_cut_inside_a_line_is_an_error_at_its_end() -> None:
    decoder = wire.Decoder()
    assert list(decoder.messages(wire.encode(SAMPLES["loaded"]) + b'{"t":"lo')) == [
        SAMPLES["loaded"]]
    with pytest.raises(wire.WireError, match="cut off"):
        decoder.close()


def test_the_messages_before_a_bad_line_are_delivered() -> None:
    decoder = wire.Decoder()
    got = []
    with pytest.raises(wire.WireError):
        for message in decoder.messages(wire.encode(SAMPLES["loaded"]) + b"junk\n"):
            got.append(message)
    assert got == [SAMPLES["loaded"]]


def test_values_json_has_no_type_for_are_written_as_text() -> None:
    line = _line({"t": "agent-error", "message": "x", "ignored": object()})
    assert json.loads(line)["ignored"].startswith("<object object")


def test_send_writes_one_whole_line() -> None:
    read_fd, write_fd = os.pipe()
    try:
        big = {"t": "holders", "report": {"x": "y" * 200_000}}  # more than a pipe holds at once
        import threading

        writer = threading.Thread(target=wire.send, args=(write_fd, big))
        writer.start()
        chunks = []
        while True:
            chunk = os.read(read_fd, 1 << 16)
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
        writer.join()
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert wire.decode(b"".join(chunks).rstrip(b"\n")) == big


def test_the_message_observer_sends_valid_messages() -> None:
    sent: list[dict[str, Any]] = []
    observer = wire.MessageObserver(sent.append)
    observer.on_measuring(3)
    observer.on_phase("locate", {"after_loops": 4})
    observer.on_loop({"index": 4, "warmup": False}, [("a.py", 1, 32, 1)])
    observer.on_checkpoint(4, {"gc_objects": 10})
    observer.on_lines([("a.py", 1, 32, 1)])
    observer.on_holders({"checkpoints": 1})
    observer.on_window({"end": {}, "holders": None})
    for message in sent:
        assert wire.decode(_line(message))["t"] == message["t"]


def test_wire_imports_the_standard_library_only() -> None:
    tree = ast.parse((ROOT / "leakscope" / "model" / "wire.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


def _loop_message(i: int, changes: list[Any]) -> dict[str, Any]:
    return {"t": "loop", "loop": {
        "index": i, "warmup": False, "phase": "detect", "rss_bytes": 123_456_789 + i,
        "malloc_bytes": None, "allocated_blocks": 51_289 + i, "gc_collections": 3,
        "seconds": 0.001234 + i * 1e-9, "odd%key": True}, "changes": changes}


@pytest.mark.parametrize("value", [0, -5, 2**70, 1e300, 5e-324, 0.1, None, True, "measure",
                                   "not a phase \"name\"", float("nan"), float("inf"), b"x"])
def test_a_loop_message_is_written_as_json_dumps_writes_it(value: Any) -> None:
    """The loop's template path gives json.dumps's bytes, or json.dumps does the writing."""
    for changes in ([], [("dir/é \"f\".py", 3, -40, 1)]):
        message = _loop_message(7, changes)
        message["loop"]["value"] = value
        expected = (json.dumps(message, separators=(",", ":"), default=str) + "\n").encode()
        assert wire.encode(message) == expected


def test_writing_loop_messages_keeps_no_block() -> None:
    """In fast mode the measured process's allocated blocks are the leak signal: writing a
    loop message must leave none behind (a tuple built from an iterator once did, one
    a message, through the interpreter's tuple free list: a fresh process shows it)."""
    code = textwrap.dedent("""
        import sys
        from leakscope.model import wire
        def message(i):
            return {"t": "loop", "loop": {"index": i, "warmup": False, "phase": "detect",
                    "rss_bytes": 123456789 + i, "allocated_blocks": 51289 + i,
                    "seconds": 0.001 + i * 1e-9}, "changes": []}
        for i in range(1000):  # one-off caches fill here (52 blocks in a fresh clone)
            wire.encode(message(i))
        before = sys.getallocatedblocks()
        for i in range(1000):
            wire.encode(message(i))
        print(sys.getallocatedblocks() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert int(out) < 50
