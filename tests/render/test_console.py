"""The terminal summary at a fixed width: paths as a person reads them (an installed
package's own path, the user's file relative to the working directory) and never a
`file:line` broken across rows, at 80 and at 120 columns."""

from __future__ import annotations

import os
import re

import pytest
from rich.console import Console

from leakscope.model import runfile
from leakscope.model.runfile import Frame, Holder, Loop, Run, Site, Verdict
from leakscope.render.console import ConsoleRenderer, summary
from leakscope.render.paths import short_location, short_path
from leakscope.render.text import ci_line, short_summary
from tests.conftest import run_cli

VENV = "/home/dev/project/.venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
USER = "scenarios/provider_bootstrappers.py"


def _site(file: str, line: int, function: str, user: Frame, rate: float) -> Site:
    return Site(
        file=file, line=line, function=function,
        traceback=[Frame(file, line, function), user], user_frame=user,
        bytes_per_iteration=rate, blocks_per_iteration=1.0, growing=True, kept_bytes=int(rate * 30),
    )


def leaking_run(cwd: str) -> Run:
    """A leak whose sites lie in an installed package, the standard library and the user's
    file, given both relative and absolute (under the working directory)."""
    user = Frame(USER, 28, "ServiceProvider.commands.<lambda>")
    absolute_user = Frame(os.path.join(cwd, "app", "handlers.py"), 218, "handle_request")
    return Run(
        target=USER, python="3.11.7", started_at="2026-12-04T16:00:00Z", settings={},
        loops=[Loop(index=i, warmup=i < 5, traced_bytes=192 * i) for i in range(55)],
        verdict=Verdict(
            leak=True, kind="reachable", bytes_per_iteration=1392.0, blocks_per_iteration=3.0,
            confidence=0.99, summary="Leak (reachable): 1.36 KiB/iter.",
        ),
        sites=[
            _site(f"{VENV}/requests/structures.py", 56, "CaseInsensitiveDict.__setitem__",
                  absolute_user, 1200.0),
            _site(f"{STDLIB}/urllib/parse.py", 504, "urlsplit", user, 100.0),
            _site(USER, 28, "ServiceProvider.commands.<lambda>", user, 92.0),
        ],
        holders=[Holder(
            path="provider_bootstrappers.Console.bootstrappers", type="list",
            role="callback-list", items_first=205, items_last=211, items_per_iteration=1.0,
            callables_defined_at=[f"{USER}:28"], grown_at=f"{VENV}/requests/hooks.py:19",
        )],
    )


@pytest.mark.parametrize(("given", "shown"), [
    (f"{VENV}/requests/structures.py", "requests/structures.py"),
    ("/usr/lib/python3/dist-packages/yaml/nodes.py", "yaml/nodes.py"),
    (f"{STDLIB}/urllib/parse.py", "urllib/parse.py"),
    ("/opt/py/lib/python3.13t/json/decoder.py", "json/decoder.py"),
    ("scenarios/x.py", "scenarios/x.py"),
    ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap>"),
    ("/srv/other/app.py", "/srv/other/app.py"),
])
def test_short_path(given, shown):
    assert short_path(given) == shown


def test_short_path_of_the_users_file_is_relative_to_the_working_directory():
    cwd = os.getcwd()
    assert short_path(os.path.join(cwd, "app", "handlers.py")) == os.path.join("app", "handlers.py")
    assert short_location(os.path.join(cwd, "app.py") + ":9") == "app.py:9"
    assert short_location(f"{VENV}/requests/hooks.py:19") == "requests/hooks.py:19"
    assert short_location("<unknown>") == "<unknown>"


def _render(run: Run, width: int) -> list[str]:
    return ConsoleRenderer(width).render(run).splitlines()


WANTED = [
    "requests/structures.py:56", "urllib/parse.py:504", f"{USER}:28", "app/handlers.py:218",
    "requests/hooks.py:19",
]


@pytest.mark.parametrize("width", [80, 120])
def test_summary_keeps_every_file_line_whole(width):
    lines = _render(leaking_run(os.getcwd()), width)
    text = "\n".join(lines)
    assert all(len(line) <= width for line in lines), text
    for location in WANTED:
        assert any(location in line for line in lines), (location, text)
    assert VENV not in text and STDLIB not in text, text
    assert os.getcwd() not in text, text


def test_plain_text_summary_and_ci_line_use_the_short_paths():
    run = leaking_run(os.getcwd())
    text = short_summary(run)
    assert VENV not in text and STDLIB not in text, text
    assert "requests/structures.py:56" in text
    assert "open app/handlers.py:218 first" in text
    assert ci_line(run, 0) == (
        "leakscope: LEAK 1.36 KiB/iter, app/handlers.py:218 "
        "(provider_bootstrappers.Console.bootstrappers)"
    )


@pytest.mark.parametrize("width", ["80", "120"])
def test_report_command_at_a_fixed_width(tmp_path, width):
    """`leakscope report` as a person runs it, in a terminal of that width."""
    run = leaking_run(str(tmp_path))
    path = runfile.save(run, tmp_path / "run.json")
    proc = run_cli("report", str(path), cwd=tmp_path, env={"COLUMNS": width})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(len(line) <= int(width) for line in lines), proc.stdout
    for location in WANTED:
        assert any(location in line for line in lines), (location, proc.stdout)
    assert not re.search(r"site-packages|/usr/lib/python", proc.stdout), proc.stdout


def test_an_undecided_verdict_is_titled_undecided_everywhere():
    """Data that cannot decide is not shown as "NO LEAK" nor "OK no leak"."""
    run = Run(target="w.py", python="3.11.7", started_at="2026-12-04T16:00:00Z", settings={},
              loops=[Loop(index=i, warmup=i < 5, traced_bytes=0) for i in range(55)])
    run.verdict = Verdict(
        leak=False, kind="none", bytes_per_iteration=0.0, blocks_per_iteration=0.0,
        confidence=0.0, summary="Undecided, not called a leak: ...; run about 950 more "
        "iterations (--iterations 1000) to tell.", evidence={"needs_units": 950},
    )
    console = Console(width=100, record=True, color_system=None)
    console.print(summary(run))
    text = console.export_text()
    assert "UNDECIDED" in text and "NO LEAK" not in text
    assert ci_line(run, 0) == ("leakscope: UNDECIDED, not called a leak: run about 950 more "
                               "iters to tell (w.py)")
    run.verdict.evidence = {}
    assert ci_line(run, 0) == "leakscope: OK no leak (w.py)"


def test_live_lines_name_the_loops_a_diff_spans():
    """A diff that covers several loops says so; a loop diffed alone prints as before."""
    from leakscope.model.runfile import LineDelta
    from leakscope.render.console import LiveLoopPrinter

    console = Console(width=100, record=True, color_system=None, force_terminal=False)
    printer = LiveLoopPrinter(console)
    change = [LineDelta("app.py", 9, 480, 5)]
    printer.on_loop(Loop(index=41, warmup=False, net_bytes=96, traced_bytes=4000,
                         traced_blocks=40), [])
    printer.on_loop(Loop(index=42, warmup=False, net_bytes=96, traced_bytes=4096,
                         traced_blocks=41, span_from=38), change)
    printer.on_loop(Loop(index=43, warmup=False, net_bytes=96, traced_bytes=4192,
                         traced_blocks=42), change)
    text = console.export_text()
    assert "lines changed over loops 38-42:" in text
    assert text.count("lines changed over") == 1
    assert text.count("app.py:9") == 2
