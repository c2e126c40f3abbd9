"""The HTML report: its view model, the escaping of hostile run strings, the atomic
write and the `leakscope html` command (the browser tests are in tests/browser/)."""

from __future__ import annotations

import json
import os
import re
import sys
from html import unescape
from pathlib import Path

import pytest

from leakscope.model import runfile
from leakscope.model.errors import LeakscopeError
from leakscope.model.runfile import Frame, Holder, LineDelta, Loop, Run, Site, Verdict
from leakscope.render import html
from leakscope.render.html import render_html, view_model, write_html
from tests.conftest import run_cli

HOSTILE = [
    "<script>alert(1)</script>",
    '" onerror="alert(1)',
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "'><svg onload=alert(1)>",
    "<!--",
]
DATA_BLOCK = re.compile(
    r'<script type="application/json" id="leakscope-data">(.*?)</script>', re.S
)


def _loops(count: int, warmup: int = 2, files: tuple[str, ...] = ("app/worker.py",)) -> list[Loop]:
    loops = []
    for i in range(count):
        measured = i >= warmup
        k = i - warmup
        loops.append(Loop(
            index=i, warmup=not measured,
            traced_bytes=100 + 50 * k if measured else None,
            traced_blocks=k + 1 if measured else None,
            rss_bytes=20_000_000 + 4096 * (i // 10),
            net_bytes=50 if measured else None,
            top=[LineDelta(f, 10 + j, 50 - j, 1) for j, f in enumerate(files)] if measured else [],
        ))
    return loops


def _run(loops: list[Loop] | None = None, hostile: str = "", cwd: str = "/nonexistent") -> Run:
    """A small analysed run; with ``hostile``, every string from the worker carries it."""
    h = hostile
    user = Frame(f"app/{h}worker.py", 12, f"handle{h}")
    site = Site(
        file=f"lib/{h}cache.py", line=40, function=f"Cache.put{h}",
        traceback=[Frame(f"lib/{h}cache.py", 40, f"Cache.put{h}"), user,
                   Frame("<frozen runpy>", 88, "<module>")],
        user_frame=user, bytes_per_iteration=50.0, blocks_per_iteration=1.0, growing=True,
        kept_bytes=1500, kept_blocks=30, series=[50 * i for i in range(30)],
        holder=f"app.registry[{h!r}]",
    )
    holder = Holder(
        path=f"app.events.Dispatcher.listeners[{h!r}]", type="list", role="callback-list",
        items_first=10, items_last=40, items_per_iteration=1.0,
        item_types={f"function{h}": 30}, callables_defined_at=[f"app/{h}providers.py:40"],
        grown_at=f"app/{h}providers.py:41", items_made_at=[f"app/{h}made.py:7"],
        items_series=list(range(10, 41)),
    )
    verdict = Verdict(
        leak=True, kind="reachable", bytes_per_iteration=50.0, blocks_per_iteration=1.0,
        confidence=0.99, summary=f"Leak (reachable): open app/{h}worker.py:12 first.",
        iterations_to_limit=1000, memory_limit_bytes=512 * 1024**2,
        projection=f"At 50 B/iter {h} reaches the limit.", evidence={f"p_value{h}": 0.001},
    )
    files = (f"app/{h}worker.py", f"lib/{h}cache.py")
    return Run(
        target=f"app/{h}worker.py:handle", python="3.11.7", started_at="2026-11-22T23:00:00Z",
        settings={"iterations": 30, "warmup": 2, "frames": 10, "holders": True,
                  "worker_args": [h, f"--name={h}"]},
        loops=loops if loops is not None else _loops(32, files=files),
        verdict=verdict, sites=[site], holders=[holder], platform=f"Linux {h}",
        observations={"cwd": cwd},
        bounded=[{"path": f"app.avatar{h}", "type": f"lru_cache{h}", "bound": 512, "items": 9,
                  "filling": True, "full": False, "items_series": [1, 5, 9]}],
    )


def _split(page: str) -> tuple[str, str]:
    """The JSON data block and the page around it."""
    match = DATA_BLOCK.search(page)
    assert match, "no data block"
    return match.group(1), page[: match.start(1)] + page[match.end(1):]


# ------------------------------------------------------------------- escaping


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_strings_never_reach_the_markup(hostile):
    run = _run(hostile=hostile)
    page = render_html(run)
    block, rest = _split(page)
    # Our two script elements and no other: nothing closed the data block early.
    assert len(re.findall(r"<script", page, re.I)) == 2
    assert len(re.findall(r"</script", page, re.I)) == 2
    # Outside the data block, no run string at all.
    for needle in ("alert(", "onerror", "onload", "worker.py", "Dispatcher", "--name="):
        assert needle not in rest, needle
    # Inside it, tojson escaped every character HTML could act on.
    for char in "<>&'":
        assert char not in block, char
    # And the strings survive intact as data, for textContent to show.
    assert json.loads(block) == json.loads(json.dumps(view_model(run)))
    assert hostile in json.loads(json.loads(block)["settings"][-1][1])


def test_every_run_string_enters_only_through_the_data_block():
    marker = "ZQXmarkerZQX"
    page = render_html(_run(hostile=marker))
    block, rest = _split(page)
    assert marker not in rest
    data = json.loads(block)
    text = json.dumps(data)
    for where in ("meta", "settings", "sites", "holders", "loops", "verdict", "run"):
        assert marker in json.dumps(data[where]), where
    assert text.count(marker) > 20


def test_script_builds_the_page_without_html_parsing():
    js = (Path(html.__file__).parent / "templates" / "report.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                 "new Function", "href", "src="):
        assert sink not in js, sink
    assert "</script" not in js.lower()
    css = (Path(html.__file__).parent / "templates" / "report.css").read_text()
    assert "</style" not in css.lower()


def test_page_is_self_contained_and_pinned_by_csp():
    page = render_html(_run())
    assert not re.search(r"https?://", page.replace("http://www.w3.org/2000/svg", ""))
    assert "@import" not in page and "url(" not in page
    csp = unescape(
        re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    )
    assert "default-src 'none'" in csp
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp


# ----------------------------------------------------------------- view model


def test_view_model_carries_verdict_sites_holders_and_settings():
    model = view_model(_run(hostile=""))
    assert model["verdict"]["leak"] is True
    assert model["verdict"]["rate"] == "50 B/iter"
    assert model["verdict"]["confidence"] == "0.99"
    assert model["verdict"]["memory_limit"] == "512 MiB"
    site = model["sites"][0]
    assert [f["user"] for f in site["traceback"]] == [False, True, False]
    assert site["user_frame"] == {"file": "app/worker.py", "short": "app/worker.py", "line": 12,
                                  "function": "handle"}
    holder = model["holders"][0]
    assert holder["grown_at"] == "app/providers.py:41"
    assert holder["defined_at"] == ["app/providers.py:40"]
    assert holder["item_types"] == [["function", 30]]
    assert ["worker_args", '["", "--name="]'] in model["settings"]
    assert ["python", "3.11.7"] in model["run"]
    # The whole model is plain JSON.
    json.dumps(model, allow_nan=False)


def test_chart_of_a_long_run_is_thinned_but_keeps_the_spike_and_the_ends():
    loops = _loops(10_005, warmup=5)
    loops[5555].traced_bytes = 10**9
    model = view_model(_run(loops=loops))
    chart = model["chart"]
    assert len(chart["x"]) <= html.CHART_POINTS
    assert chart["thinned"] is True and chart["loops"] == 10_005
    assert chart["x"][0] == 0 and chart["x"][-1] == 10_004
    assert 5555 in chart["x"]
    assert chart["x"] == sorted(chart["x"])
    assert chart["warmup"] == [0, 4] and chart["first_measured"] == 5
    assert len(chart["x"]) == len(chart["traced"]) == len(chart["rss"])


def test_fit_line_uses_the_verdicts_rate_and_sits_on_the_data():
    fit = view_model(_run())["chart"]["fit"]
    # traced = 100 + 50 * (i - 2) for measured loops 2..31, and the rate is 50 B/iter.
    assert fit["series"] == "traced"
    assert (fit["x0"], fit["y0"]) == (2, 100)
    assert (fit["x1"], fit["y1"]) == (31, 100 + 50 * 29)
    assert fit["label"] == "50 B/iter"


def test_per_loop_deltas_are_compact_and_complete():
    run = _run()
    model = view_model(run)["loops"]
    measured = [loop for loop in run.loops if not loop.warmup]
    assert model["index"] == [loop.index for loop in measured]
    assert model["files"] == ["app/worker.py", "lib/cache.py"]
    assert model["top"][0] == [0, 10, 50, 1, 1, 11, 49, 1]
    assert len(model["top"]) == len(model["net"]) == len(measured)


def test_ten_thousand_loop_report_stays_small():
    files = tuple(f"/srv/app/src/service/module_{i}.py" for i in range(10))
    page = render_html(_run(loops=_loops(10_005, warmup=5, files=files)))
    assert len(page.encode("utf-8")) < 5 * 1024 * 1024


def test_non_finite_numbers_become_null_not_invalid_json():
    run = _run()
    run.verdict.confidence = float("nan")
    run.loops[10].rss_bytes = float("inf")  # type: ignore[assignment]
    block, _ = _split(render_html(run))
    data = json.loads(block)
    assert data["verdict"]["confidence"] == "-"
    assert "NaN" not in block and "Infinity" not in block


def test_run_without_verdict_still_renders():
    run = _run()
    run.verdict = None
    data = json.loads(_split(render_html(run))[0])
    assert data["verdict"] is None and data["chart"]["fit"] is None


def test_processes_of_a_multi_process_run_are_listed():
    run = _run()
    child = _run(hostile="")
    child.process = {"pid": 41, "parent_pid": 40, "role": "worker", "command": "celery worker"}
    run.processes = [child]
    rows = view_model(run)["processes"]
    measured = len(child.measured)
    assert rows == [{"pid": "41", "parent": "40", "role": "worker", "command": "celery worker",
                     "leak": True, "summary": child.verdict.summary,
                     "units": f"{measured} + {len(child.loops) - measured} warm-up "
                              f"{child.unit}s"}]
    run.observations["advice"] = ["<b>recycle</b> after 100 tasks"]
    assert view_model(run)["advice"] == ["<b>recycle</b> after 100 tasks"]


# --------------------------------------------------------------------- source


def _source_run(tmp_path: Path, file: str, line: int) -> dict | None:
    run = _run(cwd=str(tmp_path))
    run.sites[0].user_frame = Frame(file, line, "handle")
    return view_model(run, source_roots=[tmp_path])["sites"][0]["source"]


def test_source_lines_around_the_user_frame(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "worker.py").write_text("".join(f"line {i}\n" for i in range(1, 31)))
    source = _source_run(tmp_path, "app/worker.py", 12)
    assert source == {"start": 7, "line": 12, "lines": [f"line {i}" for i in range(7, 18)]}
    # Near the top and bottom of the file, the window is cut, not padded.
    assert _source_run(tmp_path, "app/worker.py", 2)["start"] == 1
    assert _source_run(tmp_path, "app/worker.py", 30)["lines"][-1] == "line 30"
    # An absolute path is read as it is.
    assert _source_run(tmp_path, str(tmp_path / "app" / "worker.py"), 12)["start"] == 7


def test_source_respects_the_files_coding_cookie(tmp_path):
    (tmp_path / "latin.py").write_bytes(b"# -*- coding: latin-1 -*-\nname = '\xe9t\xe9'\n")
    assert _source_run(tmp_path, "latin.py", 2)["lines"][1] == "name = 'été'"


@pytest.mark.parametrize("case", ["missing", "directory", "not-python", "past-end", "bad-bytes",
                                  "frozen"])
def test_unreadable_source_is_left_out_without_error(tmp_path, case):
    (tmp_path / "dir.py").mkdir()
    (tmp_path / "secret.txt").write_text("password=1\n" * 20)
    (tmp_path / "short.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_bytes(b"# -*- coding: nonesuch -*-\nx = 1\n")
    file, line = {
        "missing": ("nope.py", 3), "directory": ("dir.py", 1), "not-python": ("secret.txt", 3),
        "past-end": ("short.py", 40), "bad-bytes": ("bad.py", 1), "frozen": ("<frozen runpy>", 88),
    }[case]
    assert _source_run(tmp_path, file, line) is None


# ---------------------------------------------------------------------- write


def test_write_html_is_atomic_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "out" / "report.html"
    assert write_html(_run(), target) == target
    assert target.read_text().startswith("<!doctype html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("case", ["parent-is-a-file", "target-is-a-directory"])
def test_unwritable_path_is_a_leakscope_error(tmp_path, case):
    (tmp_path / "plain").write_text("x")
    (tmp_path / "adir").mkdir()
    target = tmp_path / ("plain/report.html" if case == "parent-is-a-file" else "adir")
    with pytest.raises(LeakscopeError, match="cannot write HTML report"):
        write_html(_run(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "plain"]
    assert list((tmp_path / "adir").iterdir()) == []


# ------------------------------------------------------------------------ CLI


def test_html_command_writes_reports_stem_html_by_default(tmp_path):
    runfile.save(_run(), tmp_path / "nightly.json")
    proc = run_cli("html", "nightly.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "reports" / "nightly.html"
    assert proc.stdout.strip() == str(Path("reports") / "nightly.html")
    assert "leakscope-data" in written.read_text()


def test_html_command_output_option(tmp_path):
    runfile.save(_run(), tmp_path / "run.json")
    proc = run_cli("html", str(tmp_path / "run.json"), "-o", str(tmp_path / "x" / "r.html"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "x" / "r.html").is_file()


@pytest.mark.parametrize("case", ["missing", "corrupt", "foreign", "unwritable"])
def test_html_command_bad_input_is_one_line_and_exit_2(tmp_path, case):
    good = tmp_path / "run.json"
    runfile.save(_run(), good)
    (tmp_path / "corrupt.json").write_text('{"schema": "leakscope.run/1", "loo')
    (tmp_path / "foreign.json").write_text('{"name": "package.json"}')
    (tmp_path / "plain").write_text("x")
    args = {
        "missing": [str(tmp_path / "nope.json")],
        "corrupt": [str(tmp_path / "corrupt.json")],
        "foreign": [str(tmp_path / "foreign.json")],
        "unwritable": [str(good), "-o", str(tmp_path / "plain" / "r.html")],
    }[case]
    proc = run_cli("html", *args, "-o", str(tmp_path / "out.html")) if case != "unwritable" \
        else run_cli("html", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("leakscope: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.html").exists()


def test_html_command_open_hands_the_file_uri_to_the_browser(tmp_path):
    runfile.save(_run(), tmp_path / "run.json")
    opened = tmp_path / "opened.txt"
    fake = tmp_path / "fake_browser.py"
    fake.write_text(f"import sys\nopen({str(opened)!r}, 'w').write(sys.argv[1])\n")
    report = tmp_path / "r.html"
    proc = run_cli("html", str(tmp_path / "run.json"), "-o", str(report), "--open",
                   env={"BROWSER": f"{sys.executable} {fake} %s"})
    assert proc.returncode == 0, proc.stderr
    assert opened.read_text() == report.resolve().as_uri()


# ------------------------------------------------------------- what each view says


def _fast_run(detect: int = 200, locate: int = 6) -> Run:
    """A fast-mode run: warm-up, untraced detect loops on the counters, then a few traced."""
    loops = [Loop(index=i, warmup=True, phase="warmup", allocated_blocks=66_000 + i,
                  rss_bytes=20_000_000) for i in range(5)]
    for i in range(5, 5 + detect):
        loops.append(Loop(index=i, warmup=False, phase="detect",
                          allocated_blocks=66_000 + 3 * i, malloc_bytes=3_390_000 + 8 * i,
                          rss_bytes=20_000_000 + 4096 * (i // 50)))
    for k, i in enumerate(range(5 + detect, 5 + detect + locate)):
        loops.append(Loop(index=i, warmup=False, phase="locate", traced_bytes=192 * (k + 1),
                          traced_blocks=2 * (k + 1), net_bytes=192,
                          allocated_blocks=70_000 + 3 * i, rss_bytes=22_000_000))
    run = _run(loops=loops)
    run.mode = "fast"
    run.verdict.bytes_per_iteration = 192.0
    run.verdict.blocks_per_iteration = 3.0
    return run


def test_fast_run_chart_plots_the_counters_the_verdict_read():
    """Fast mode decides on the untraced loops' counters: the chart shows those over the
    whole run, not only the few traced loops at its end."""
    chart = view_model(_fast_run())["chart"]
    keys = [panel["key"] for panel in chart["panels"]]
    assert keys[0] == "blocks" and "rss" in keys and "traced" not in keys
    blocks = [v for v in chart["blocks"] if v is not None]
    assert len(blocks) == 205  # warm-up and detect loops; the traced loops' counters are off
    assert chart["panels"][0]["format"] == "count"
    fit = chart["fit"]
    assert fit["series"] == "blocks" and fit["label"] == "3 blocks/iter"
    assert (fit["x0"], fit["x1"]) == (5, 204)
    assert chart["traced_range"] == [205, 210]
    # The counters' own rate, when the verdict's evidence carries it (the verdict's
    # blocks per loop come from the traced loops).
    run = _fast_run()
    run.verdict.evidence["blocks_rate"] = 2.5
    assert view_model(run)["chart"]["fit"]["label"] == "2.5 blocks/iter"
    # A native leak was decided on malloc's bytes: that panel comes first, with the fit.
    run.verdict.kind = "native"
    run.verdict.evidence["malloc_rate"] = 8.0
    chart = view_model(run)["chart"]
    assert [panel["key"] for panel in chart["panels"]] == ["malloc", "blocks", "rss"]
    assert chart["fit"]["series"] == "malloc" and chart["fit"]["label"] == "8 B/iter"


def test_full_run_chart_plots_traced_bytes_and_rss():
    chart = view_model(_run())["chart"]
    assert [panel["key"] for panel in chart["panels"]] == ["traced", "rss"]
    assert chart["traced_range"] is None


def test_steady_sites_are_not_listed_as_growing():
    run = _run()
    steady = Site(file="lib/pool.py", line=5, function="Pool.get", traceback=[],
                  user_frame=None, bytes_per_iteration=2.0, blocks_per_iteration=0.0,
                  growing=False, kept_bytes=300)
    run.sites.append(steady)
    model = view_model(run)
    groups = model["site_groups"]
    assert [g["title"] for g in groups] == ["Growing allocation sites", "Kept, not growing"]
    assert [model["sites"][i]["growing"] for i in groups[0]["sites"]] == [True]
    assert [model["sites"][i]["file"] for i in groups[1]["sites"]] == ["lib/pool.py"]
    run.sites[0].growing = False
    groups = view_model(run)["site_groups"]
    assert [(g["title"], len(g["sites"])) for g in groups] == [("Largest kept sites", 2)]


def test_bounded_containers_filling_are_in_the_report():
    run = _run()
    run.holders = []
    run.verdict.leak = False
    run.bounded = [
        {"path": "app.render_avatar", "type": "lru_cache", "bound": 512, "items": 55,
         "filling": True, "full": False, "items_series": [5, 17, 30, 43, 55]},
        {"path": "re._cache", "type": "dict", "bound": 512, "items": 30, "filling": False,
         "full": False, "items_series": [30, 30]},
    ]
    bounded = view_model(run)["bounded"]
    assert bounded == [{"path": "app.render_avatar", "type": "lru_cache", "state": "filling",
                        "items": 55, "bound": 512, "series": [5, 17, 30, 43, 55]}]


def test_per_loop_view_opens_on_the_last_traced_loop():
    """`leakscope run` traces a window and watches the rest with counters: the view opens
    on a unit that has lines to show, not on an untraced one."""
    loops = _fast_run(detect=100, locate=6).loops
    loops += [Loop(index=111 + i, warmup=False, phase="detect", allocated_blocks=70_000)
              for i in range(40)]
    model = view_model(_run(loops=loops))["loops"]
    assert model["net"][model["open"]] is not None
    assert model["index"][model["open"]] == 110
    assert view_model(_run())["loops"]["open"] == len(view_model(_run())["loops"]["index"]) - 1


def test_paths_are_shown_as_in_the_terminal():
    """An installed package by its import path, as the terminal shows it; the file as
    recorded stays in the model for the source snippet."""
    lib = "/srv/venv/lib/python3.11/site-packages/requests/structures.py"
    run = _run()
    run.sites[0].file = lib
    run.sites[0].traceback[0] = Frame(lib, 40, "CaseInsensitiveDict.__setitem__")
    run.holders[0].grown_at = f"{lib}:41"
    run.loops[-1].top = [LineDelta(lib, 56, 100, 1)]
    model = view_model(run)
    site = model["sites"][0]
    assert site["file"] == lib and site["short"] == "requests/structures.py"
    assert site["traceback"][0]["short"] == "requests/structures.py"
    assert model["holders"][0]["grown_at"] == "requests/structures.py:41"
    assert "requests/structures.py" in model["loops"]["files"]
    assert lib not in model["loops"]["files"]


def test_per_loop_view_shows_the_span_of_each_diff():
    """A diff that covers several loops: every loop of it knows the span, the rest none."""
    run = _run()
    measured = [loop for loop in run.loops if not loop.warmup]
    spanned = measured[10]
    spanned.span_from = measured[7].index
    for loop in measured[7:10]:
        loop.top = []
    model = view_model(run)["loops"]
    span = [measured[7].index, spanned.index]
    assert model["span"][7:11] == [span] * 4
    assert model["span"][6] is None and model["span"][11] is None
    assert len(model["span"]) == len(model["index"])
