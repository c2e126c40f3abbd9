"""JUnit XML and the CI line on hostile strings: valid XML, one line, nothing lost."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from leakscope.analysis.budget import Decision, judge
from leakscope.model.errors import EXIT_USAGE, LeakscopeError
from leakscope.model.runfile import Frame, Holder, Run, Site, Verdict
from leakscope.render.junit import render_junit, write_junit
from leakscope.render.text import ci_line

HOSTILE = 'app/<x&y>"\']]>\x01\x1b[31m.py'


def leaking_run(target: str = "w.py", path: str = "app.CACHE") -> Run:
    frame = Frame("app/providers.py", 41, "register")
    return Run(
        target=target, python="3.11", started_at="now", settings={},
        verdict=Verdict(leak=True, kind="reachable", bytes_per_iteration=1433.6,
                        blocks_per_iteration=3.0, confidence=0.99, summary="Leak <here> & now"),
        sites=[Site(file="app/providers.py", line=41, function="register", traceback=[frame],
                    user_frame=frame, bytes_per_iteration=1433.6, blocks_per_iteration=3.0,
                    growing=True, kept_bytes=20000)],
        holders=[Holder(path=path, type="list", role="callback-list", items_first=1,
                        items_last=30, items_per_iteration=1.0)],
    )


def test_ci_line_matches_the_issue_example():
    run = leaking_run(path="app.providers.Console.bootstrappers")
    assert ci_line(run, 0) == (
        "leakscope: LEAK 1.4 KiB/iter, app/providers.py:41 (app.providers.Console.bootstrappers)"
    )
    assert ci_line(run, 2048).startswith("leakscope: OK leak of 1.4 KiB/iter within the 2 KiB")


def test_ci_line_stays_one_line():
    assert "\n" not in ci_line(leaking_run(path="app.D['a\nb']"), 0)


def test_hostile_strings_give_valid_xml_that_keeps_them():
    decisions = [
        judge(HOSTILE, leaking_run(HOSTILE, path=HOSTILE), 0),
        Decision(target="crash.py", max_growth_bytes=0, error="worker raised <Boom> & \x00"),
    ]
    root = ET.fromstring(render_junit(decisions))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "1")
    failing, crashed = suite.findall("testcase")
    assert failing.get("name") == 'app/<x&y>"\']]>\\x01\\x1b[31m.py'
    failure = failing.find("failure")
    assert failure is not None
    assert failure.get("message", "").startswith("leakscope: LEAK 1.4 KiB/iter, app/providers.py")
    assert "Leak <here> & now" in (failure.text or "")
    error = crashed.find("error")
    assert error is not None and error.get("message") == "worker raised <Boom> & \\x00"


def test_write_is_atomic_and_leaves_no_temporary(tmp_path):
    path = write_junit([judge("w.py", leaking_run(), 4096)], tmp_path / "reports" / "j.xml")
    assert [p.name for p in path.parent.iterdir()] == ["j.xml"]
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case is not None and case.find("failure") is None


@pytest.mark.parametrize("case", ["parent-is-a-file", "target-is-a-directory"])
def test_unwritable_path_is_one_leakscope_error(tmp_path, case):
    """As for --html: one error line and exit code 2, not an internal error."""
    (tmp_path / "plain").write_text("x")
    (tmp_path / "adir").mkdir()
    target = tmp_path / ("plain/j.xml" if case == "parent-is-a-file" else "adir")
    with pytest.raises(LeakscopeError, match="cannot write JUnit XML") as info:
        write_junit([judge("w.py", leaking_run(), 4096)], target)
    assert info.value.exit_code == EXIT_USAGE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "plain"]
    assert list((tmp_path / "adir").iterdir()) == []
