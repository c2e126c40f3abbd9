"""The HTML report of a real run, opened in headless Chromium: the verdict reads right,
the chart draws, a click opens a site's traceback, nothing is fetched, and names
crafted to inject script run none."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from leakscope.model import runfile
from leakscope.model.runfile import Frame, Holder, LineDelta
from tests.conftest import ROOT, load_json, run_cli

SCREENSHOT = ROOT / "reports" / "browser-report.png"
SCENARIO = "scenarios/provider_bootstrappers.py"
# Each payload tries to set window.__xss and open a dialog, whichever way it gets in.
PAYLOADS = [
    "<script>window.__xss=1;alert(1)</script>",
    '" onerror="window.__xss=2;alert(2)',
    "</script><script>window.__xss=3;alert(3)</script>",
    '<img src=x onerror="window.__xss=4;alert(4)">',
    "'><svg onload=window.__xss=5;alert(5)>",
]
WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__csp.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> tuple[Path, Path]:
    """A real scenario run and its report, both written by the real CLI in one `trace`."""
    out = tmp_path_factory.mktemp("real")
    run_json, report = out / "run.json", out / "report.html"
    proc = subprocess.run(
        [sys.executable, "-m", "leakscope", "trace", SCENARIO, "--quiet", "--iterations", "30",
         "--json", str(run_json), "--html", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report.is_file(), proc.stdout
    return run_json, report


def _open(page: Page, path: Path) -> dict[str, list[str]]:
    """Open a report, recording requests, dialogs, script errors and CSP violations."""
    seen: dict[str, list[str]] = {"requests": [], "dialogs": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda msg: seen["errors"].append(msg.text) if msg.type == "error" else None)

    def on_dialog(dialog) -> None:
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.add_init_script(WATCH)
    page.goto(path.as_uri())
    expect(page.locator("html")).to_have_attribute("data-ready", "1")
    return seen


def test_report_of_a_real_run(browser, real_run):
    run_json, report = real_run
    run = load_json(run_json)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = _open(page, report)

    # The verdict, in the run's own sentence.
    expect(page.locator("#verdict .verdict-status")).to_have_text("LEAK")
    expect(page.locator("#verdict .summary")).to_have_text(run["verdict"]["summary"])
    expect(page.locator("#verdict .summary")).to_contain_text("provider_bootstrappers")
    expect(page.locator("#verdict")).to_contain_text("confidence")
    expect(page.locator("#verdict .projection")).to_contain_text("512 MiB limit")

    # The chart drew: a traced-bytes path through every measured loop, and RSS.
    traced = page.locator("#memory-chart path.series-traced")
    expect(traced).to_have_count(1)
    d = traced.get_attribute("d")
    assert d.startswith("M") and d.count("L") >= 29, d
    assert traced.bounding_box()["width"] > 300
    assert page.locator("#memory-chart path.series-rss").get_attribute("d").count("L") >= 30
    expect(page.locator("#memory-chart line.fit")).to_have_count(1)
    expect(page.locator("#memory-chart rect.warmup")).to_have_count(2)

    # Clicking the first site opens its traceback, the user frame highlighted.
    first = page.locator("#site-list details.site").first
    traceback = first.locator(".traceback")
    expect(traceback).to_be_hidden()
    first.locator("summary").click()
    expect(traceback).to_be_visible()
    user = first.locator(".frame.user")
    expect(user).to_have_count(1)
    frame = run["sites"][0]["user_frame"]
    expect(user.locator(".loc")).to_have_text(f"{frame['file']}:{frame['line']}")
    expect(user).to_contain_text("your code")
    highlight = user.evaluate("node => getComputedStyle(node).backgroundColor")
    plain = first.locator(".frame:not(.user)").first.evaluate(
        "node => getComputedStyle(node).backgroundColor"
    )
    assert highlight != plain
    # And the source around it, read from the scenario file, that line marked.
    source_line = (ROOT / frame["file"]).read_text().splitlines()[frame["line"] - 1]
    expect(first.locator(".source tr.hl .ln")).to_have_text(str(frame["line"]))
    expect(first.locator(".source tr.hl .code")).to_have_text(source_line)

    # Holders and the per-loop view.
    if run["holders"]:
        expect(page.locator("#holder-list .holder-path").first).to_have_text(
            run["holders"][0]["path"]
        )
    last = run["loops"][-1]
    expect(page.locator("#loop-detail .loop-head")).to_contain_text(f"iteration {last['index']}")
    page.locator("#loop-input").fill(str(run["loops"][10]["index"]))
    page.locator("#loop-input").dispatch_event("change")
    expect(page.locator("#loop-detail .loop-head")).to_contain_text(
        f"iteration {run['loops'][10]['index']}"
    )
    expect(page.locator("#loop-detail table.deltas tbody tr")).to_have_count(
        len(run["loops"][10]["top"])
    )

    # Hovering the chart shows that loop's figures; clicking it opens the loop below.
    overlay = page.locator("#memory-chart rect.overlay")
    overlay.hover(position={"x": 5, "y": 40})
    expect(page.locator("#chart-tip")).to_be_visible()
    expect(page.locator("#chart-tip")).to_contain_text("iteration 0")
    overlay.click(position={"x": 5, "y": 40})
    first_measured = next(loop["index"] for loop in run["loops"] if not loop["warmup"])
    expect(page.locator("#loop-detail .loop-head")).to_contain_text(f"iteration {first_measured}")

    # Nothing left the machine, nothing broke, and the page's own CSP let its script run.
    assert [url for url in seen["requests"] if not url.startswith("file://")] == []
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert page.evaluate("window.__csp") == []

    page.locator("#loop-last").click()
    light_background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.close()

    # The dark theme follows the system.
    dark = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme="dark")
    _open(dark, report)
    dark.locator("#site-list details.site summary").first.click()
    assert dark.evaluate("getComputedStyle(document.body).backgroundColor") != light_background
    dark.screenshot(path=str(SCREENSHOT.with_name("browser-report-dark.png")), full_page=True)
    dark.close()


def _hostile_run(real: Path, tmp_path: Path) -> Path:
    """The real run with every string a worker controls replaced by payloads."""
    run = runfile.load(real)
    p = PAYLOADS
    # A readable source file whose lines are payloads too, so the snippet carries them.
    source = tmp_path / "hostile_source.py"
    source.write_text("".join(f"x{i} = {payload!r}\n" for i, payload in enumerate(p * 3)))
    run.target = f"{p[0]}.py:{p[1]}"
    run.settings["worker_args"] = list(p)
    run.platform = p[2]
    for i, site in enumerate(run.sites):
        site.file, site.function = f"app/{p[i % 5]}.py", f"handle{p[(i + 1) % 5]}"
        site.traceback = [Frame(f"lib/{q}.py", 10 + k, f"fn{q}") for k, q in enumerate(p)]
        site.user_frame = Frame(str(source), 8, p[3])
        site.traceback.append(replace(site.user_frame))
        site.holder = f"app.registry[{p[2]!r}]"
    for loop in run.loops:
        loop.top = [LineDelta(f"app/{q}.py", 7, 100, 1) for q in p] + loop.top
    run.holders = [Holder(
        path=f"app.events.listeners[{p[0]!r}][{p[1]!r}]", type=p[4], role="callback-list",
        items_first=1, items_last=31, items_per_iteration=1.0,
        item_types={q: 6 for q in p}, callables_defined_at=[f"{p[3]}:40"],
        grown_at=f"{p[2]}:41", items_made_at=[f"{p[1]}:3"], items_series=[1, 11, 21, 31],
    )]
    if hasattr(run.holders[0], "keys_sample"):
        run.holders[0].keys_sample = [repr(q) for q in p]
        run.holders[0].grown_at_stack = [[q, 9] for q in p]
    assert run.verdict is not None
    run.verdict.summary = f"Leak: open {p[0]} first {p[1]}"
    run.verdict.projection = p[2]
    run.verdict.evidence = {q: q for q in p}
    path = tmp_path / "hostile.json"
    runfile.save(run, path)
    return path


@pytest.mark.parametrize("csp", ["page-csp", "csp-bypassed"])
def test_hostile_names_run_no_script(browser, real_run, tmp_path, csp):
    """With the page's CSP, and with it bypassed so escaping alone must hold."""
    hostile = _hostile_run(real_run[0], tmp_path)
    report = tmp_path / "hostile.html"
    proc = run_cli("html", str(hostile), "-o", str(report))
    assert proc.returncode == 0, proc.stderr

    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, bypass_csp=csp == "csp-bypassed"
    )
    page = context.new_page()
    seen = _open(page, report)
    # Open everything that shows run strings: every site, the evidence, the chart's tooltip.
    for summary in page.locator("details > summary").all():
        summary.click()
    page.locator("#memory-chart rect.overlay").hover()
    page.locator("#loop-largest").click()

    assert seen["dialogs"] == []
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.evaluate("window.__csp") == [], "an injected script or handler was attempted"
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert page.evaluate(
        "document.querySelectorAll('img, iframe, object, embed, [onerror], [onload]').length"
    ) == 0
    assert [url for url in seen["requests"] if not url.startswith("file://")] == []
    assert seen["errors"] == []
    # The payloads are on the page as text, exactly as the run holds them.
    text = page.locator("body").inner_text()
    for payload in PAYLOADS:
        assert payload in text, payload
    expect(page.locator("#site-list .source tr.hl .code").first).to_contain_text(PAYLOADS[2])
    context.close()


def test_report_of_a_real_worker_run(browser, tmp_path):
    """`leakscope run` on two processes (a parent and its forked child): the page lists
    both, marks the leaking one, shows the advice, and fetches nothing."""
    script = tmp_path / "forking_consumer.py"
    script.write_text(
        "import os\nimport leakscope\n\nclass Hub:\n    listeners = []\n\n"
        "pid = os.fork()\nfor i in range(60):\n"
        "    if pid:\n        Hub.listeners.append(lambda i=i: i)\n"
        "    leakscope.tick()\n"
        "if pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\n"
    )
    run_json, report = tmp_path / "run.json", tmp_path / "run.html"
    proc = run_cli("run", "--quiet", "--sample", "1", "--json", str(run_json), "--html",
                   str(report), "--",
                   sys.executable, str(script))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = load_json(run_json)
    assert run["verdict"]["leak"], [
        (p["process"], p["verdict"], [loop.get("traced_bytes") for loop in p["loops"]])
        for p in run["processes"]]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = _open(page, report)
    expect(page.locator("#verdict .verdict-status")).to_have_text("LEAK")
    expect(page.locator("#verdict .summary")).to_contain_text("forking_consumer.Hub.listeners")
    rows = page.locator("#processes tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#processes tbody tr.growing")).to_have_count(1)
    leaking = next(p for p in run["processes"] if p["verdict"]["leak"])
    expect(page.locator("#processes tbody tr.growing")).to_contain_text(
        str(leaking["process"]["pid"]))
    expect(page.locator("#processes ul.advice li").first).to_contain_text("recycling")
    assert not [url for url in seen["requests"] if not url.startswith("file:")], seen
    assert not seen["errors"] and not seen["dialogs"], seen
    page.close()


def _trace_report(tmp_path: Path, scenario: str, *extra: str) -> tuple[dict, Path]:
    run_json, report = tmp_path / "run.json", tmp_path / "report.html"
    proc = run_cli("trace", scenario, "--quiet", *extra, "--json", str(run_json),
                   "--html", str(report))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return load_json(run_json), report


def test_fast_report_charts_the_counters_the_verdict_read(browser, tmp_path):
    """`trace --fast` decides on the untraced loops' counters: the chart draws them across
    the whole run, not the six traced loops squeezed at the right edge."""
    run, report = _trace_report(tmp_path, SCENARIO, "--fast")
    detect = [loop for loop in run["loops"] if loop["phase"] == "detect"]
    assert len(detect) >= 150 and run["verdict"]["leak"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = _open(page, report)
    blocks = page.locator("#memory-chart path.series-blocks")
    expect(blocks).to_have_count(1)
    assert blocks.get_attribute("d").count("L") >= len(detect) - 1
    plot = page.locator("#memory-chart .panel-blocks rect.plot-bg").bounding_box()
    assert blocks.bounding_box()["width"] > 0.8 * plot["width"]
    expect(page.locator("#memory-chart path.series-traced")).to_have_count(0)
    expect(page.locator("#memory-chart line.fit")).to_have_count(1)
    expect(page.locator("#chart-note")).to_contain_text("cheap counters")
    assert seen["errors"] == [] and seen["dialogs"] == []
    page.close()


def test_bounded_cache_report_shows_the_cache_the_verdict_names(browser, tmp_path):
    run, report = _trace_report(tmp_path, "scenarios/lru_bounded_filling.py")
    assert not run["verdict"]["leak"] and "render_avatar" in run["verdict"]["summary"]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    seen = _open(page, report)
    holders = page.locator("#holders")
    expect(holders).to_contain_text("lru_bounded_filling.render_avatar")
    expect(holders).to_contain_text("filling")
    expect(holders).to_contain_text("of 512")
    expect(holders).not_to_contain_text("No growing container was found")
    assert seen["errors"] == []
    page.close()


def test_steady_sites_are_never_listed_as_growing(browser, real_run, tmp_path):
    run = runfile.load(real_run[0])
    assert len([s for s in run.sites if s.growing]) >= 1
    steady = replace(run.sites[0], file="lib/pool.py", line=5, function="Pool.get",
                     growing=False)
    run.sites.append(steady)
    path = runfile.save(run, tmp_path / "mixed.json")
    report = tmp_path / "mixed.html"
    assert run_cli("html", str(path), "-o", str(report)).returncode == 0
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _open(page, report)
    expect(page.locator("#sites-title")).to_have_text("Growing allocation sites")
    growing = page.locator("#site-list [data-group=growing] details.site")
    # (A real run may also keep a steady site of its own: a cycle the collector
    # had not reached yet when the run ended, by the gc's timing.)
    expect(growing).to_have_count(len([s for s in run.sites if s.growing]))
    expect(page.locator("#site-list [data-group=growing] .badge.flat")).to_have_count(0)
    expect(page.locator("#site-list h3.site-group")).to_have_text("Kept, not growing")
    expect(page.locator("#site-list [data-group=other] details.site").filter(
        has_text="lib/pool.py:5")).to_have_count(1)
    page.close()


def test_run_report_opens_on_a_traced_unit(browser, tmp_path):
    """`leakscope run` traces a window and watches the rest: the per-unit view opens on a
    unit with a figure and lines, not on one of the untraced last units."""
    run_json, report = tmp_path / "run.json", tmp_path / "run.html"
    proc = run_cli("run", "--quiet", "--units", "300", "--json", str(run_json), "--html",
                   str(report), "--", sys.executable, "scenarios/workers/consumer_tick.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = load_json(run_json)
    assert run["loops"][-1]["net_bytes"] is None, "the run should end on untraced units"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    _open(page, report)
    head = page.locator("#loop-detail .loop-head")
    # The window's last traced unit: what it kept or freed (either is a net figure).
    expect(head).to_contain_text(re.compile(r"B (kept|freed)"))
    expect(head).not_to_contain_text("no net figure")
    expect(page.locator("#loop-detail table.deltas tbody tr").first).to_be_visible()
    page.close()
