"""JUnit XML for ``check``: one testcase per target, so CI systems list leaks as failed tests.

Built with xml.etree, which escapes markup in text and attributes; what it
does not do is drop the control characters XML 1.0 forbids. Target names,
paths and reprs come from user code or a run file, so they are shown through
``safe.printable`` (the text lines through ``text.py``, which does the same);
``_clean`` is the last guard for the characters XML cannot carry at all.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from leakscope.analysis.budget import Decision
from leakscope.render.base import write_output
from leakscope.render.safe import printable
from leakscope.render.text import ci_line, short_summary

# Characters XML 1.0 cannot carry at all, even escaped.
_ILLEGAL_XML = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]"
)
SUITE_NAME = "leakscope check"
CLASSNAME = "leakscope"


def _clean(text: str) -> str:
    return _ILLEGAL_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _seconds(decision: Decision) -> float:
    if decision.seconds is not None:
        return decision.seconds
    run = decision.run
    if run is None:
        return 0.0
    elapsed = run.observations.get("elapsed_seconds")
    if isinstance(elapsed, (int, float)):
        return float(elapsed)
    return float(sum(loop.seconds or 0 for loop in run.loops))


def _testcase(decision: Decision) -> ET.Element:
    case = ET.Element("testcase", {
        "classname": CLASSNAME, "name": _clean(printable(decision.target)),
        "time": f"{_seconds(decision):.3f}",
    })
    run = decision.run
    if run is None or run.verdict is None:
        message = _clean(printable(decision.error or "no verdict"))
        error = ET.SubElement(case, "error", {"message": message, "type": "worker-failed"})
        error.text = message
        return case
    verdict = run.verdict
    properties = ET.SubElement(case, "properties")
    for name, value in (
        ("leak", str(verdict.leak).lower()), ("kind", verdict.kind),
        ("bytes_per_iteration", f"{verdict.bytes_per_iteration:g}"),
        ("max_growth_bytes", str(decision.max_growth_bytes)),
        ("confidence", f"{verdict.confidence:g}"),
    ):
        ET.SubElement(properties, "property", {"name": name, "value": value})
    line = ci_line(run, decision.max_growth_bytes, decision.failed)
    summary = short_summary(run)
    if decision.failed:
        failure = ET.SubElement(case, "failure", {"message": _clean(line), "type": "leak"})
        failure.text = _clean(summary)
    out = ET.SubElement(case, "system-out")
    out.text = _clean(f"{line}\n{summary}\n")
    return case


def render_junit(decisions: Sequence[Decision]) -> bytes:
    """The XML document for the decisions of one ``check``."""
    failures = sum(1 for d in decisions if d.run is not None and d.failed)
    errors = sum(1 for d in decisions if d.run is None)
    total = f"{sum(_seconds(d) for d in decisions):.3f}"
    counts = {"tests": str(len(decisions)), "failures": str(failures), "errors": str(errors)}
    root = ET.Element("testsuites", {"name": "leakscope", **counts, "time": total})
    suite = ET.SubElement(root, "testsuite", {
        "name": SUITE_NAME, **counts, "skipped": "0", "time": total,
        "timestamp": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
    })
    for decision in decisions:
        suite.append(_testcase(decision))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


class JunitRenderer:
    """``check``'s decisions as JUnit XML, one testcase per target."""

    what = "JUnit XML"
    mode: int | None = None  # readable by its owner only, as it has always been

    def render(self, decisions: Sequence[Decision], /) -> bytes:
        return render_junit(decisions)


def write_junit(decisions: Sequence[Decision], path: str | os.PathLike[str]) -> Path:
    """Write atomically: a CI step that reads the file never sees half of it.

    An unwritable path is one LeakscopeError line (exit code 2), as for ``--html``.
    """
    return write_output(JunitRenderer(), decisions, path)
