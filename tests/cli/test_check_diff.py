"""`leakscope check` and `leakscope diff` through the real CLI: exit codes, the CI line,
JUnit XML, [tool.leakscope] and bad input."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCENARIOS, expected, load_json, run_cli

CASES = sorted(p for p in SCENARIOS.glob("*.py") if "Expected:" in p.read_text())
FAST = ["--iterations", "20", "--no-holders"]
CI_LEAK = re.compile(r"^leakscope: LEAK [0-9.,]+ (B|KiB|MiB)/iter")


def _target_args(scenario: Path) -> list[str]:
    args = [str(scenario.relative_to(ROOT))]
    if scenario.name == "tick_consumer.py":
        args += ["--", "orders"]
    return args


def _first_line(proc) -> str:
    return proc.stdout.splitlines()[0]


def _assert_one_error_line(proc, code: int, *fragments: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("leakscope: error: ")
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0]


# ----------------------------------------------------------- every scenario


@pytest.mark.parametrize("scenario", CASES, ids=lambda p: p.stem)
def test_check_fails_on_each_leak_and_passes_each_negative(scenario, tmp_path):
    """Default settings, as a repository's CI would run it: the docstring decides the exit code."""
    want = expected(scenario)
    out = tmp_path / "run.json"
    args = _target_args(scenario)
    proc = run_cli("check", args[0], "--json", str(out), *args[1:])
    leak = want["leak"] == "yes"
    assert proc.returncode == (1 if leak else 0), proc.stdout + proc.stderr
    line = _first_line(proc)
    run = load_json(out)
    assert run["verdict"]["leak"] is leak
    if not leak:
        if "needs_units" in run["verdict"]["evidence"]:
            assert line.startswith("leakscope: UNDECIDED, not called a leak: run about "), line
            assert line.endswith(f"to tell ({args[0]})"), line
        else:
            assert line == f"leakscope: OK no leak ({args[0]})", line
        return
    assert CI_LEAK.match(line), line
    # The CI line names what the run file names first: the growing site's user
    # line and the growing container (test_scenarios.py holds both to the docstring).
    sites = [s for s in run["sites"] if s["growing"]]
    holders = [h for h in run["holders"] if h["growing"]]
    if sites:
        frame = sites[0]["user_frame"]
        assert f", {frame['file']}:{frame['line']}" in line, line
    if holders:
        assert line.endswith(f" ({holders[0]['path']})"), line
    if want["kind"] != "reachable":
        assert f" {want['kind']}" in line, line
    assert proc.stdout.splitlines()[1] == run["verdict"]["summary"]


# ------------------------------------------------------- a fast direct subset


def test_check_leak_exits_1_with_one_ci_line(tmp_path):
    proc = run_cli("check", "scenarios/static_array.py", *FAST, "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 1, proc.stderr
    line = _first_line(proc)
    assert re.fullmatch(
        r"leakscope: LEAK [0-9.,]+ B/iter, scenarios/static_array\.py:26", line
    ), line
    summary = proc.stdout.splitlines()[1]
    assert summary.startswith("Leak (reachable")
    assert "growing allocation sites:" in proc.stdout
    # stderr says which Python ran the worker, and nothing else.
    assert re.fullmatch(r"leakscope: worker Python [0-9.]+: \S+ \([^)]+\)\n", proc.stderr), \
        proc.stderr


def test_check_negative_exits_0(tmp_path):
    proc = run_cli("check", "scenarios/cleared_list.py", *FAST, "--json", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _first_line(proc) == "leakscope: OK no leak (scenarios/cleared_list.py)"


def test_check_target_runs_the_same_trace_as_trace(tmp_path):
    """`check TARGET` writes the run file `trace` would, so `report` and `html` read it."""
    out = tmp_path / "r.json"
    proc = run_cli("check", "scenarios/static_string.py", *FAST, "--full", "--json", str(out))
    assert proc.returncode == 1
    run = load_json(out)
    assert run["mode"] == "full"
    assert run["schema"] == "leakscope.run/1"
    assert run["target"] == "scenarios/static_string.py"
    assert run["settings"]["iterations"] == 20
    assert run["settings"]["holders"] is False
    assert len([loop for loop in run["loops"] if not loop["warmup"]]) == 20
    report = run_cli("report", str(out))
    assert report.returncode == 0


def test_max_growth_above_the_rate_passes(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("check", "scenarios/static_array.py", *FAST, "--json", str(out),
                   "--max-growth", "4KiB")
    assert proc.returncode == 0, proc.stdout
    line = _first_line(proc)
    assert line.startswith("leakscope: OK leak of "), line
    assert "within the 4 KiB/iter budget" in line
    assert load_json(out)["verdict"]["leak"] is True


# ----------------------------------------------------------- check RUN.json


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One leaking and one clean run file, traced once for the tests below."""
    folder = tmp_path_factory.mktemp("runs")
    paths = {}
    for name, scenario in (("leak", "static_array"), ("clean", "cleared_list")):
        path = folder / f"{name}.json"
        proc = run_cli("trace", f"scenarios/{scenario}.py", *FAST, "--quiet",
                       "--json", str(path))
        assert proc.returncode == 0, proc.stderr
        paths[name] = path
    return paths


def test_check_run_file(runs):
    leak = run_cli("check", str(runs["leak"]))
    assert leak.returncode == 1
    assert CI_LEAK.match(_first_line(leak))
    clean = run_cli("check", str(runs["clean"]))
    assert clean.returncode == 0
    assert _first_line(clean).startswith("leakscope: OK no leak")


def test_check_run_file_reads_the_saved_verdict(runs, tmp_path):
    """check RUN.json judges the verdict in the file; it never recomputes one from the loops."""
    data = load_json(runs["leak"])
    data["verdict"]["leak"] = False
    data["verdict"]["kind"] = "none"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    proc = run_cli("check", str(edited))
    assert proc.returncode == 0, proc.stdout
    data["verdict"].update(leak=True, kind="reachable", bytes_per_iteration=5000.0)
    edited.write_text(json.dumps(data))
    assert run_cli("check", str(edited), "--max-growth", "4KiB").returncode == 1
    assert run_cli("check", str(edited), "--max-growth", "8KiB").returncode == 0


def test_check_run_file_refuses_tracing_options(runs):
    proc = run_cli("check", str(runs["leak"]), "--iterations", "5")
    _assert_one_error_line(proc, 2, "--iterations", "saved run")


def test_junit_xml_for_a_failing_and_a_passing_check(runs, tmp_path):
    report = tmp_path / "junit" / "leakscope.xml"
    proc = run_cli("check", str(runs["leak"]), "--junit", str(report))
    assert proc.returncode == 1
    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")
    (case,) = suite.findall("testcase")
    assert case.get("name") == "scenarios/static_array.py"
    failure = case.find("failure")
    assert failure is not None
    assert failure.get("message") == _first_line(proc)
    assert "growing allocation sites:" in (failure.text or "")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["leak"] == "true" and props["kind"] == "reachable"

    proc = run_cli("check", str(runs["clean"]), "--junit", str(report))
    assert proc.returncode == 0
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
    (case,) = suite.findall("testcase")
    assert case.find("failure") is None
    assert "leakscope: OK no leak" in (case.findtext("system-out") or "")


# --------------------------------------------------------------------- diff


def test_diff_exit_codes(runs):
    new_leak = run_cli("diff", str(runs["clean"]), str(runs["leak"]), "--fail-on-new")
    assert new_leak.returncode == 1, new_leak.stdout + new_leak.stderr
    assert re.match(r"leakscope diff: NEW grows \d+ sites? that BASE did not; rate ",
                    _first_line(new_leak))
    assert "scenarios/static_array.py:26" in new_leak.stdout
    # Without --fail-on-new, diff reports and exits 0.
    assert run_cli("diff", str(runs["clean"]), str(runs["leak"])).returncode == 0
    same = run_cli("diff", str(runs["leak"]), str(runs["leak"]), "--fail-on-new")
    assert same.returncode == 0
    assert _first_line(same).startswith("leakscope diff: nothing grows in NEW")
    fixed = run_cli("diff", str(runs["leak"]), str(runs["clean"]), "--fail-on-new")
    assert fixed.returncode == 0
    assert "no longer growing:" in fixed.stdout


# ---------------------------------------------------------------- bad input


def test_corrupt_run_file_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _assert_one_error_line(run_cli("check", str(bad)), 2, "bad.json", "corrupt")
    _assert_one_error_line(run_cli("diff", str(bad), str(bad)), 2, "bad.json")
    _assert_one_error_line(run_cli("check", str(tmp_path / "missing.json")), 2, "missing.json")


@pytest.mark.parametrize("size", ["4XB", "-1KiB", "lots", ""])
def test_bad_max_growth_exits_2(size):
    proc = run_cli("check", "scenarios/static_array.py", "--max-growth", size)
    _assert_one_error_line(proc, 2, "--max-growth")


def test_check_without_target_or_config_exits_2(tmp_path):
    proc = run_cli("check", cwd=tmp_path)
    _assert_one_error_line(proc, 2, "[tool.leakscope]")


# ------------------------------------------------------------ [tool.leakscope]


def _project(tmp_path: Path, config: str) -> Path:
    for name in ("static_array.py", "cleared_list.py"):
        shutil.copy(SCENARIOS / name, tmp_path / name)
    (tmp_path / "pyproject.toml").write_text(config)
    (tmp_path / "sub").mkdir()
    return tmp_path / "sub"


def test_check_reads_targets_from_pyproject(tmp_path):
    """From a subdirectory, `leakscope check` alone runs every configured target."""
    cwd = _project(tmp_path, """
[project]
name = "demo"

[tool.leakscope]
iterations = 20
holders = false
targets = ["static_array.py", { target = "cleared_list.py", max-growth = "1KiB" }]
""")
    proc = run_cli("check", "--junit", "out.xml", cwd=cwd)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "leakscope: 2 targets: 1 above the budget, 0 failed to run, 1 passed" in proc.stdout
    cases = ET.parse(cwd / "out.xml").getroot().iter("testcase")
    failed = {c.get("name"): c.find("failure") is not None for c in cases}
    assert failed == {"../static_array.py": True, "../cleared_list.py": False}
    runs = sorted(p.name for p in (cwd / ".leakscope" / "check").iterdir())
    assert runs == ["cleared_list.py.json", "static_array.py.json"]
    settings = load_json(cwd / ".leakscope" / "check" / "static_array.py.json")["settings"]
    assert settings["iterations"] == 20


def test_command_line_beats_pyproject(tmp_path):
    cwd = _project(tmp_path, """
[tool.leakscope]
iterations = 20
holders = false
max-growth = "0B"
targets = ["static_array.py"]
""")
    proc = run_cli("check", "--max-growth", "1MiB", cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "within the 1 MiB/iter budget" in _first_line(proc)


def test_config_error_names_key_and_value(tmp_path):
    cwd = _project(tmp_path, '[tool.leakscope]\niterations = "many"\ntargets = ["x.py"]\n')
    proc = run_cli("check", cwd=cwd)
    _assert_one_error_line(proc, 2, "pyproject.toml", "iterations", '"many"')


def test_worker_failure_in_one_target_exits_3_and_the_others_still_run(tmp_path):
    cwd = _project(tmp_path, """
[tool.leakscope]
iterations = 20
holders = false
targets = ["crash.py", "cleared_list.py"]
""")
    (tmp_path / "crash.py").write_text("def iteration():\n    raise RuntimeError('boom')\n")
    proc = run_cli("check", "--junit", "out.xml", cwd=cwd)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "RuntimeError: boom" in proc.stderr
    assert "leakscope: OK no leak" in proc.stdout
    suite = ET.parse(cwd / "out.xml").getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("errors"), suite.get("failures")) == ("1", "0")


def test_check_runs_fast_mode_by_default(tmp_path):
    """A CI gate must be cheap: untraced counters first, tracing only to locate."""
    out = tmp_path / "r.json"
    proc = run_cli("check", "scenarios/static_array.py", "--no-holders", "--json", str(out))
    assert proc.returncode == 1, proc.stdout
    run = load_json(out)
    assert run["mode"] == "fast"
    phases = {loop.get("phase") for loop in run["loops"]}
    assert {"warmup", "detect", "locate"} <= phases
    assert "fast mode" in proc.stdout
    clean = run_cli("check", "scenarios/ring_buffer.py", "--json", str(out))
    assert clean.returncode == 0, clean.stdout
    assert not [loop for loop in load_json(out)["loops"] if loop.get("phase") == "locate"]


# ------------------------------------------- a bounded cache beside a leak


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_bounded_library_cache_filling_beside_a_leak_stays_apart(mode, tmp_path):
    """`urllib.parse.urlsplit`'s lru_cache (maxsize 128) fills while SESSIONS leaks: its
    lines are reported as filling, not growing; the rate is the leak's alone (the same
    worker without the cache is the reference); the CI line names the user's line and
    container; and `diff --fail-on-new` finds nothing new that the cache alone brought.
    In fast mode the cache is full before tracing starts, and each call replaces an
    untraced entry with a traced one: the traced window sees it grow all the same."""
    scenario = "scenarios/sessions_beside_url_cache.py"
    cached, plain = tmp_path / "cached.json", tmp_path / "plain.json"
    fast = ["--fast"] if mode == "fast" else []
    assert run_cli("trace", scenario, "--quiet", *fast, "--json", str(cached)).returncode == 0
    assert run_cli("trace", scenario, "--quiet", *fast, "--json", str(plain), "--", "plain"
                   ).returncode == 0
    with_cache, without = load_json(cached), load_json(plain)
    assert with_cache["verdict"]["leak"] and without["verdict"]["leak"]
    rate = with_cache["verdict"]["bytes_per_iteration"]
    reference = without["verdict"]["bytes_per_iteration"]
    assert abs(rate - reference) <= 0.25 * reference, (rate, reference)
    growing = [s for s in with_cache["sites"] if s["growing"]]
    assert growing, with_cache["verdict"]["summary"]
    library = [f"{s['file']}:{s['line']}" for s in growing
               if "urllib" in s["file"] or s["file"].startswith("<")]
    assert not library, library
    assert growing[0]["user_frame"]["line"] == 23, growing[0]
    filling = [s["file"] for s in with_cache["sites"] if s.get("filling")]
    assert any(f.endswith("urllib/parse.py") for f in filling), filling

    check = run_cli("check", scenario, "--json", str(tmp_path / "check.json"))
    assert check.returncode == 1, check.stdout + check.stderr
    line = _first_line(check)
    assert line.endswith(
        ", scenarios/sessions_beside_url_cache.py:23 (sessions_beside_url_cache.SESSIONS)"
    ), line

    diff = run_cli("diff", str(plain), str(cached), "--fail-on-new")
    assert diff.returncode == 0, diff.stdout
    assert "urllib" not in diff.stdout, diff.stdout
