"""One call shape for every renderer: ``render(subject)`` gives what the old functions gave,
and ``write_output`` files it atomically or fails with one LeakscopeError line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leakscope.analysis.budget import Decision, judge
from leakscope.analysis.compare import compare
from leakscope.model.atomic import SHARED
from leakscope.model.errors import EXIT_USAGE, LeakscopeError
from leakscope.render.base import write_output
from leakscope.render.console import ConsoleRenderer
from leakscope.render.html import HtmlRenderer, render_html
from leakscope.render.junit import JunitRenderer, render_junit
from leakscope.render.text import CheckText, ComparisonText, ci_line, comparison_text, short_summary
from tests.render.test_html import _run as html_run
from tests.unit.test_junit import leaking_run


def test_html_renderer_is_render_html() -> None:
    run = html_run()
    assert HtmlRenderer().render(run) == render_html(run)


def test_junit_renderer_is_render_junit() -> None:
    decisions = [judge("w.py", leaking_run(), 4096), Decision("x.py", 0, error="boom")]
    # The suite's timestamp is the only part that may differ between two renders.
    strip = [line for line in JunitRenderer().render(decisions).splitlines()
             if b"timestamp=" not in line]
    assert strip == [line for line in render_junit(decisions).splitlines()
                     if b"timestamp=" not in line]


@pytest.mark.parametrize("budget", [0, 1 << 20])
def test_check_text_is_the_ci_line_then_the_summary(budget: int) -> None:
    decision = judge("w.py", leaking_run(), budget)
    assert decision.run is not None
    assert CheckText().render(decision) == (
        f"{ci_line(decision.run, budget, decision.failed)}\n{short_summary(decision.run)}"
    )


def test_comparison_text_is_comparison_text() -> None:
    comparison = compare(leaking_run(), leaking_run(path="app.OTHER"))
    assert ComparisonText().render(comparison) == comparison_text(comparison)


def test_console_renderer_has_the_width_it_is_given() -> None:
    text = ConsoleRenderer(60).render(leaking_run())
    assert "LEAK" in text
    assert max(len(line) for line in text.splitlines()) <= 60


class _Broken:
    what = "broken report"
    mode: int | None = SHARED

    def render(self, subject: object, /) -> str:
        raise ValueError("cannot render")


def test_a_renderer_error_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_output(_Broken(), object(), tmp_path / "out" / "r.txt")
    assert os.listdir(tmp_path) == []


def test_write_output_makes_the_directories(tmp_path: Path) -> None:
    target = write_output(HtmlRenderer(), html_run(), tmp_path / "a" / "b" / "r.html")
    assert target.read_text(encoding="utf-8") == render_html(html_run())


def test_an_unwritable_path_names_the_file_kind(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(LeakscopeError) as info:
        write_output(JunitRenderer(), [], tmp_path / "plain" / "j.xml")
    assert info.value.message.startswith(f"cannot write JUnit XML {tmp_path / 'plain' / 'j.xml'}: ")
    assert info.value.exit_code == EXIT_USAGE
