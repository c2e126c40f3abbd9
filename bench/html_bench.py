"""Size and open time of the HTML report of a real 10,000-iteration run, in headless Chromium.

Measures what issue 4 asks BENCHMARKS.md to record (under 5 MB, opens in under 2 s),
and prints the figures as plain lines; it asserts nothing.

    .venv/bin/python bench/html_bench.py [--iterations N] [--scenario FILE] [--run RUN.json]

The run is traced for real. The default scenario is ``static_string.py`` (one block
that grows, one changed line a loop). A worker that keeps one more block every loop
(``static_array.py``) costs more per loop as its traces accumulate; since the per-loop
aggregation stopped allocating, 2,000 such loops take ~5 s rather than ~8 min. To bound
the size from above,
the same run is rendered a second time with every loop's deltas padded to ``--top``
(10) distinct lines, the most a run file holds; that copy is marked synthetic.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from leakscope.model import runfile
from leakscope.model.runfile import LineDelta, Run
from leakscope.render.html import write_html

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "reports" / "bench"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
# Records, in the page's own clock (ms since navigation start), the first animation
# frame in which the verdict sentence is laid out and visible.
VERDICT_PROBE = """
(function () {
  function poll() {
    var node = document.querySelector("#verdict .summary");
    if (node && node.offsetParent !== null && node.textContent) {
      window.__verdictVisibleAt = performance.now();
      return;
    }
    requestAnimationFrame(poll);
  }
  requestAnimationFrame(poll);
})();
"""


def trace(scenario: str, iterations: int, run_path: Path) -> float:
    """Trace the scenario with the real CLI; return the seconds it took."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "leakscope", "trace", scenario, "--iterations", str(iterations),
         "--warmup", "5", "--quiet", "--no-holders", "--json", str(run_path)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def padded(run: Run, top: int) -> Run:
    """The run with every measured loop's deltas filled up to ``top`` distinct lines."""
    for loop in run.loops:
        if loop.warmup:
            continue
        extra = top - len(loop.top)
        loop.top = loop.top + [
            LineDelta(f"/srv/app/src/service/handlers/module_{k:02d}.py", 100 + loop.index % 500,
                      (-1) ** k * (48 + loop.index % 97), (-1) ** k)
            for k in range(max(0, extra))
        ]
    return run


def open_times(report: Path, repeat: int) -> list[tuple[float, float]]:
    """(in-page ms to the verdict being visible, wall ms from goto to seeing it), per run."""
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeat):
            # A fresh context each time: no cache, no warmed-up page.
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.add_init_script(VERDICT_PROBE)
            started = time.perf_counter()
            page.goto(report.as_uri(), wait_until="commit")
            page.wait_for_function("window.__verdictVisibleAt !== undefined", timeout=60_000)
            wall = (time.perf_counter() - started) * 1000
            results.append((page.evaluate("window.__verdictVisibleAt"), wall))
            context.close()
        browser.close()
    return results


def measure(label: str, run: Run, path: Path, repeat: int) -> None:
    started = time.perf_counter()
    write_html(run, path)
    render = time.perf_counter() - started
    size = path.stat().st_size
    times = open_times(path, repeat)
    in_page = [t for t, _ in times]
    wall = [w for _, w in times]
    print(f"{label}: {path.relative_to(ROOT)}")
    print(f"  size: {size / 1024 / 1024:.2f} MB ({size:,} bytes)")
    print(f"  render (view model + template + write): {render:.2f} s")
    print(f"  open, navigation start to verdict visible: median {statistics.median(in_page):.0f} ms"
          f" (runs: {', '.join(f'{t:.0f}' for t in in_page)} ms)")
    print(f"  open, wall clock from goto to verdict seen: median {statistics.median(wall):.0f} ms"
          f" (runs: {', '.join(f'{w:.0f}' for w in wall)} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--scenario", default="scenarios/static_string.py")
    parser.add_argument("--run", type=Path, help="reuse this run file instead of tracing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--top", type=int, default=10, help="deltas per loop in the padded copy")
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; Chromium {CHROMIUM}")
    if args.run is None:
        run_path = OUT / f"run-{args.iterations}.json"
        seconds = trace(args.scenario, args.iterations, run_path)
        print(f"trace: {args.scenario}, {args.iterations:,} iterations, {seconds:.1f} s")
    else:
        run_path = args.run
        print(f"trace: reused {run_path}")
    run = runfile.load(run_path)
    measured = len(run.measured)
    deltas = sum(len(loop.top) for loop in run.loops)
    print(f"run: {run.target}, {measured:,} measured + {len(run.loops) - measured} warm-up loops,"
          f" {deltas:,} line deltas, run file {run_path.stat().st_size / 1024 / 1024:.2f} MB")
    measure("report of the real run", run, OUT / f"report-{measured}.html", args.repeat)
    full = padded(runfile.load(run_path), args.top)
    measure(f"same run, synthetic: every loop padded to {args.top} deltas", full,
            OUT / f"report-{measured}-top{args.top}.html", args.repeat)


if __name__ == "__main__":
    main()
