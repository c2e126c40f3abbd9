"""Fuzz the run-file loader and every renderer: no input may end in a traceback.

``runfile.load`` is the one door a saved run comes in by, so whatever bytes a
file holds, it either returns a Run or raises RunFileError (one line, exit 2).
A Run it returns must then render in every form (terminal, CI text, diff,
JUnit, HTML) without raising, and with no control character of the file's
reaching the output. Hypothesis mutates a real-shaped run field by field, with
JSON values biased towards what broke leakscope before (issue 17).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from leakscope.analysis.budget import judge
from leakscope.analysis.compare import compare
from leakscope.model import runfile
from leakscope.model.errors import RunFileError
from leakscope.render.console import summary
from leakscope.render.html import render_html, view_model
from leakscope.render.junit import render_junit
from leakscope.render.text import ci_line, comparison_text, short_summary
from tests.unit.test_runfile import full_run

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

HOSTILE_TEXT = [
    "\x1b]0;pwned\x07", "\x1b[2J", "\x1b]8;;https://evil.example/\x1b\\x\x1b]8;;\x1b\\",
    "[/dim]", "[link=https://evil.example/]x[/link]", "[bold", "\\", "\ud800", "\udcff",
    "\u202e", "\x9b", "\x00", "reachable x", "</script>", "", "a\nb\r\n",
    "registry", "callback-list", "none", "native", "fast", "locate",
]
# Numbers as JSON text, so that what Python's json.dumps cannot write is tried too.
NUMBER_TEXT = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity", str(10**400), "9" * 5000,
               "1e30", "-0", "0.5", "1E+2", "12.0", "-7"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_TEXT),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)
NUMBER_MARK = "__number__"
SHOWN = [
    ("target",), ("python",), ("unit",), ("verdict", "summary"), ("verdict", "projection"),
    ("sites", 0, "file"), ("sites", 0, "function"), ("sites", 0, "user_frame", "file"),
    ("holders", 0, "path"), ("holders", 0, "type"), ("holders", 0, "grown_at"),
    ("bounded", 0, "path"), ("bounded", 0, "type"), ("loops", 1, "top", 0, "file"),
]


def _paths(node: Any, here: tuple = ()) -> list[tuple]:
    """Every place in a JSON document a mutation can land."""
    found = [here] if here else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*here, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*here, index))
    return found


def _apply(document: dict, path: tuple, how: str, value: Any) -> None:
    node = document
    for step in path[:-1]:
        node = node[step]
    last = path[-1]
    if how == "delete" and isinstance(node, dict):
        node.pop(last)
    elif how == "append" and isinstance(node[last], list):
        node[last].append(value)
    else:
        node[last] = value


def _at(document: Any, path: tuple) -> Any:
    for step in path:
        document = document[step]
    return document


def _alike(current: Any) -> st.SearchStrategy[Any]:
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.integers(-(10**30), 10**30) | st.sampled_from([0, -1, 2**63, -(2**63)])
    if isinstance(current, float):
        return st.floats(-1e30, 1e30) | st.sampled_from([0.0, -0.0, 1e-300, 1e30])
    if isinstance(current, str):
        return st.sampled_from(HOSTILE_TEXT) | st.text(max_size=12) | st.builds(
            "".join, st.lists(st.sampled_from(HOSTILE_TEXT), max_size=4))
    return values


@st.composite
def mutated_runs(draw: st.DrawFn) -> str:
    """A real-shaped run file with a few fields replaced, deleted or appended to."""
    document = json.loads(json.dumps(runfile.to_dict(full_run())))
    document["bounded"][0]["filling"] = True
    numbers: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        # Half the time away from the loops, whose many numbers would drown the rest.
        paths = _paths(document)
        if draw(st.booleans()):
            paths = [p for p in paths if p[0] != "loops"] or paths
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(["alike"] * 6 + ["replace", "delete", "append", "number"]
                                   + ["shown"] * 3))
        if how == "shown":  # a string every renderer shows
            path, how = draw(st.sampled_from(SHOWN)), "alike"
        try:
            current = _at(document, path)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation moved the ground: skip this one
        if how == "number":
            numbers.append(draw(st.sampled_from(NUMBER_TEXT)))
            value: Any = f"{NUMBER_MARK}{len(numbers) - 1}"
        elif how == "alike":  # same type, hostile value: what passes the type checks
            value = draw(_alike(current))
            how = "replace"
        else:
            value = draw(values)
        try:
            _apply(document, path, how, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation moved the ground: skip this one
    text = json.dumps(document)
    for i, number in enumerate(numbers):
        text = text.replace(json.dumps(f"{NUMBER_MARK}{i}"), number)
    return text


SGR = re.compile(r"\x1b\[[0-9;]*m")


def _no_controls(text: str, where: str) -> None:
    bad = {c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0
           or 0xD800 <= ord(c) <= 0xDFFF or c == "\u202e"}
    assert not bad, (where, sorted(hex(ord(c)) for c in bad))


def _render_everything(run: runfile.Run) -> None:
    """Every renderer, as the commands call them; none may raise."""
    if run.verdict is not None:
        for terminal in (False, True):
            out = io.StringIO()
            console = Console(file=out, width=100, force_terminal=terminal,
                              color_system="standard" if terminal else None, highlight=False)
            console.print(summary(run))
            _no_controls(SGR.sub("", out.getvalue()), "console")
        for text in (ci_line(run, 0), ci_line(run, 4096), short_summary(run),
                     comparison_text(compare(run, run))):
            _no_controls(text, "text")
        render_junit([judge(run.target, run, 0)]).decode("utf-8")
    page = render_html(run, source_roots=[Path.cwd()])
    assert page.count("<script") == 2
    json.dumps(view_model(run), allow_nan=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "run.json"


@FUZZ
@given(text=mutated_runs())
def test_mutated_run_files_load_or_refuse_and_always_render(text: str, scratch: Path) -> None:
    scratch.write_text(text, encoding="utf-8")
    try:
        run = runfile.load(scratch)
    except RunFileError as exc:
        assert "\n" not in exc.message and exc.message.startswith(str(scratch))
        return
    _render_everything(run)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_load_or_refuse(raw: bytes, scratch: Path) -> None:
    scratch.write_bytes(raw)
    try:
        runfile.load(scratch)
    except RunFileError as exc:
        assert "\n" not in exc.message


def test_the_unmutated_base_renders(scratch: Path) -> None:
    """The fuzz's starting point loads and renders: the mutations, not the base, fail."""
    scratch.write_text(json.dumps(runfile.to_dict(full_run())))
    _render_everything(runfile.load(scratch))


@pytest.mark.parametrize(("raw", "shown"), [
    ("\x1b]0;t\x07", "\\x1b]0;t\\x07"), ("a\nb\tc\r", "a\\x0ab\\x09c\\x0d"), ("\x9b2J", "\\x9b2J"),
    ("\x7f", "\\x7f"), ("\u202eyp.exe", "\\u202eyp.exe"), ("caf\udce9", "caf\\udce9"),
    ("\u2028", "\\u2028"), ("[/dim] é 日本 ✓", "[/dim] é 日本 ✓"),
])
def test_printable_shows_each_unsafe_character_as_its_escape(raw: str, shown: str) -> None:
    from leakscope.render.safe import printable

    assert printable(raw) == shown


def test_displayed_copies_nothing_when_clean_and_never_changes_its_input() -> None:
    from leakscope.render.safe import displayed

    clean = full_run()
    assert displayed(clean) is clean
    dirty = full_run()
    dirty.loops[2].top[0].file = "app\x1b[2J.py"
    shown = displayed(dirty)
    assert shown.loops[2].top[0].file == "app\\x1b[2J.py"
    assert dirty.loops[2].top[0].file == "app\x1b[2J.py"
    assert shown.loops[1] is dirty.loops[1] and shown.sites is dirty.sites
