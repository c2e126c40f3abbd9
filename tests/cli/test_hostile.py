"""Hostile run files, options and directories through the real CLI (issue 17, "Nothing trusted").

A run file is data from elsewhere (a CI artifact, a bug report): no value in it
may crash leakscope (exit 1 reads as "leak above budget" to every CI), drive
the terminal, make the HTML page read files outside the run's own tree, or
hang the reader. Each case crafts the smallest input that did one of these.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import load_json, run_cli

EXIT_USAGE = 2
EXIT_INTERNAL = 4
SECRET = "PASSWORD = 'hunter2-do-not-leak'"

LEAKY = """\
KEPT = []


def iteration():
    KEPT.append(bytearray(512))
"""


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real run of a leaking worker (sites, a holder, a user frame), as a dict to mutate."""
    root = tmp_path_factory.mktemp("good")
    (root / "leaky.py").write_text(LEAKY)
    out = root / "run.json"
    proc = run_cli("trace", "leaky.py", "--json", str(out), "--iterations", "12", "--warmup", "1",
                   "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    data = load_json(out)
    assert data["verdict"]["leak"] and data["holders"] and data["sites"], data["verdict"]
    assert data["sites"][0]["user_frame"] is not None
    return data


def _copy(data: dict) -> dict:
    return json.loads(json.dumps(data))


def _one_error(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _commands(path: Path, good_path: Path) -> dict[str, list[str]]:
    """Every command that reads a run file, with the hostile one in each position."""
    return {
        "report": ["report", str(path)],
        "check": ["check", str(path)],
        "html": ["html", str(path), "-o", str(path.with_suffix(".html"))],
        "diff-base": ["diff", str(path), str(good_path)],
        "diff-new": ["diff", str(good_path), str(path)],
    }


# ------------------------------------------------- 1. crashes were exit 1


def _deep(good: dict) -> str:
    return '{"schema": "leakscope.run/1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _number(field: str, literal: str) -> Callable[[dict], str]:
    def make(good: dict) -> str:
        data = _copy(good)
        data["verdict"][field] = 12345.5
        return json.dumps(data).replace(f'"{field}": 12345.5', f'"{field}": {literal}')
    return make


def _missing_bounded_key(good: dict) -> str:
    data = _copy(good)
    data["bounded"] = [{"path": "app.cache", "filling": True, "items": 3, "bound": 10}]
    return json.dumps(data)


def _deep_processes(good: dict) -> str:
    data = _copy(good)
    child = _copy(good)
    for _ in range(300):
        child = {**_copy(good), "process": {"pid": 1}, "processes": [child]}
    data["processes"] = [child]
    return json.dumps(data)


CRASHES: dict[str, tuple[Callable[[dict], str], str]] = {
    "100000-deep-nest": (_deep, "nested too deeply"),
    "300-deep-processes": (_deep_processes, "nested too deeply"),
    "1e999": (_number("bytes_per_iteration", "1e999"), "out of range"),
    "-1e999": (_number("confidence", "-1e999"), "out of range"),
    "NaN": (_number("blocks_per_iteration", "NaN"), "NaN"),
    "Infinity": (_number("confidence", "Infinity"), "Infinity"),
    "10**400": (_number("bytes_per_iteration", str(10**400)), "out of range"),
    "5000-digit-int": (_number("bytes_per_iteration", "9" * 5000), "out of range"),
    "bounded-missing-key": (_missing_bounded_key, "bounded[0] has no 'type'"),
}


@pytest.mark.parametrize("command", ["report", "check", "html", "diff-base", "diff-new"])
@pytest.mark.parametrize("case", list(CRASHES))
def test_run_file_that_crashed_leakscope_is_one_line_and_exit_2(
    good: dict, tmp_path: Path, case: str, command: str
) -> None:
    make, says = CRASHES[case]
    path, good_path = tmp_path / "hostile.json", tmp_path / "good.json"
    path.write_text(make(good))
    good_path.write_text(json.dumps(good))
    proc = run_cli(*_commands(path, good_path)[command], cwd=tmp_path, timeout=60)
    _one_error(proc, EXIT_USAGE, "leakscope: error: ", str(path), says)


@pytest.mark.parametrize("command", ["report", "check", "html", "diff-base", "diff-new"])
def test_lone_surrogate_is_shown_escaped(good: dict, tmp_path: Path, command: str) -> None:
    """A file name a worker decoded with surrogateescape is a lone surrogate in JSON:
    legitimate, so it is shown as an escape rather than refused or crashing the print."""
    data = _copy(good)
    data["verdict"]["summary"] = "kept by caf\udce9.py"
    data["target"] = "w\udcff.py"
    data["sites"][0]["file"] = data["sites"][0]["user_frame"]["file"] = "caf\udce9.py"
    path, good_path = tmp_path / "surrogate.json", tmp_path / "good.json"
    path.write_text(json.dumps(data))
    good_path.write_text(json.dumps(good))
    proc = run_cli(*_commands(path, good_path)[command], cwd=tmp_path, timeout=60)
    assert proc.returncode in (0, 1), (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    if command == "html":
        page = path.with_suffix(".html").read_text(encoding="utf-8")
        assert "\\udce9" in page
    else:
        assert "\\udce9" in proc.stdout or "\\udcff" in proc.stdout, proc.stdout


def test_a_bug_in_leakscope_is_an_internal_error_not_exit_1(good: dict, tmp_path: Path) -> None:
    """The catch-all in main(): one line, asks for a report, and an exit code no CI reads
    as a leak. The bug is planted by replacing the loader, then the real main() runs."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps(good))
    code = (
        "import sys, leakscope.model.runfile as r, leakscope.cli as cli\n"
        "def boom(path):\n    raise ZeroDivisionError('planted bug')\n"
        "r.load = boom\ncli.main(sys.argv[1:])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "report", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1"})
    line = _one_error(proc, EXIT_INTERNAL, "leakscope: internal error", "ZeroDivisionError",
                      "planted bug", "please report")
    assert line.startswith("leakscope: internal error: ")


def test_internal_error_with_debug_shows_the_traceback(good: dict, tmp_path: Path) -> None:
    code = (
        "import sys, leakscope.model.runfile as r, leakscope.cli as cli\n"
        "def boom(path):\n    raise ZeroDivisionError('planted bug')\n"
        "r.load = boom\ncli.main(sys.argv[1:])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "report", "x.json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NO_COLOR": "1", "LEAKSCOPE_DEBUG": "1"})
    assert proc.returncode == EXIT_INTERNAL
    assert "Traceback" in proc.stderr and "planted bug" in proc.stderr


W = "def iteration():\n    pass\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["trace", "w.py", "--timeout", "inf"], "--timeout"),
        (["trace", "w.py", "--timeout", "nan"], "--timeout"),
        (["check", "w.py", "--timeout", "inf"], "--timeout"),
        (["run", "--timeout", "inf", "--", "python3", "w.py"], "--timeout"),
        (["run", "--duration", "inf", "--", "python3", "w.py"], "--duration"),
        (["run", "--stop-timeout", "inf", "--", "python3", "w.py"], "--stop-timeout"),
        (["run", "--stop-timeout", "-1", "--", "python3", "w.py"], "--stop-timeout"),
        (["trace", "w.py", "--frames", "99999999999"], "--frames"),
        (["trace", "w.py", "--frames", "70000"], "--frames"),
        (["check", "w.py", "--frames", "99999999999"], "--frames"),
        (["run", "--frames", "99999999999", "--", "python3", "w.py"], "--frames"),
        (["trace", "w.py", "--memory-limit", "9" * 400 + "GiB"], "--memory-limit"),
        (["check", "w.py", "--max-growth", "9" * 400], "--max-growth"),
        (["check", "w.py", "--memory-limit", "9" * 400], "--memory-limit"),
    ],
    ids=lambda v: " ".join(a[:20] for a in v) if isinstance(v, list) else None,
)
def test_out_of_range_options_are_usage_errors(args: list[str], says: str,
                                               tmp_path: Path) -> None:
    """Not an OverflowError traceback, and not a worker failure (exit 3) either."""
    (tmp_path / "w.py").write_text(W)
    proc = run_cli(*args, cwd=tmp_path, timeout=60)
    _one_error(proc, EXIT_USAGE, "leakscope: error: ", says)


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("timeout = inf", "timeout = inf"),
        ("timeout = nan", "timeout = nan"),
        ("frames = 99999999999", "frames = 99999999999"),
        ('memory-limit = "' + "9" * 400 + 'GiB"', "memory-limit"),
        ("memory-limit = 99999999999999999999", "memory-limit"),
    ],
)
def test_out_of_range_config_is_a_config_error(toml: str, says: str, tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(W)
    (tmp_path / "pyproject.toml").write_text(f'[tool.leakscope]\ntargets = ["w.py"]\n{toml}\n')
    proc = run_cli("check", cwd=tmp_path, timeout=60)
    _one_error(proc, EXIT_USAGE, "pyproject.toml", says)


# ---------------------------------------------------- 2. terminal injection

OSC_TITLE = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J\x1b[H"
OSC_LINK = "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\"
BIDI = "\u202eexe.py"
SGR = re.compile(r"\x1b\[[0-9;]*m")


def _injected(good: dict) -> dict:
    data = _copy(good)
    data["target"] = "[link=https://evil.example/]leaky.py[/link]" + OSC_TITLE
    data["python"] = "3.11[/dim]"
    data["verdict"]["summary"] = f"Leak{OSC_TITLE}{CLEAR}{OSC_LINK} [bold]really[/bold] [/dim]"
    data["verdict"]["projection"] = "[/]" + CLEAR
    site = data["sites"][0]
    site["file"] = site["user_frame"]["file"] = f"app/{BIDI}\x1b[31m[/red]"
    site["function"] = "handle\x07\x08\r\n[/dim]"
    holder = data["holders"][0]
    holder["path"] = "app.cache[/dim]\x1b]8;;https://evil.example/\x07x"
    holder["type"] = "[red]dict"
    holder["grown_at"] = "\x9b2J app.py:3"  # C1 CSI
    data["bounded"] = [{"path": "lru[/dim]\x1b[2J", "type": "[/]", "bound": 4, "items": 3,
                        "filling": True}]
    return data


def _visible(text: str) -> str:
    return SGR.sub("", text)


@pytest.mark.parametrize("command", ["report", "check", "diff-base", "diff-new"])
def test_run_file_strings_cannot_drive_the_terminal(good: dict, tmp_path: Path,
                                                   command: str) -> None:
    """Rich on a (forced) terminal: only its own colour codes may reach it, and every
    string from the file is printed as the text it is, markup included."""
    path, good_path = tmp_path / "evil.json", tmp_path / "good.json"
    path.write_text(json.dumps(_injected(good)))
    good_path.write_text(json.dumps(good))
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "NO_COLOR": ""}
    env_clean = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    proc = subprocess.run(
        [sys.executable, "-m", "leakscope", *_commands(path, good_path)[command]],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**env_clean, **{k: v for k, v in env.items() if v}, "COLUMNS": "200"},
    )
    assert proc.returncode in (0, 1), (proc.stdout, proc.stderr)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    visible = _visible(out)
    # Nothing but rich's own SGR colour codes: no OSC (title, hyperlink), no clear, no BEL.
    controls = {ch for ch in visible if (ord(ch) < 32 and ch != "\n") or 0x7f <= ord(ch) < 0xa0}
    assert not controls, [hex(ord(c)) for c in controls]
    assert "\u202e" not in visible
    assert "\\x1b]0;pwned\\x07" in visible  # shown, as text
    if command != "check":
        assert "[link=https://evil.example/]leaky.py[/link]" in visible
    if command == "report":
        assert "[bold]really[/bold] [/dim]" in visible
        assert "app.cache[/dim]" in visible
        assert "\\u202eexe.py" in visible


def test_report_in_a_pipe_is_plain_text(good: dict, tmp_path: Path) -> None:
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(_injected(good)))
    proc = run_cli("report", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "[link=https://evil.example/]" in proc.stdout
    assert "lru[/dim]\\x1b[2J" in proc.stdout


def test_junit_carries_no_control_characters(good: dict, tmp_path: Path) -> None:
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(_injected(good)))
    proc = run_cli("check", str(path), "--junit", str(tmp_path / "j.xml"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    xml = (tmp_path / "j.xml").read_text()
    assert "\x1b" not in xml and "&#27;" not in xml and "\x9b" not in xml
    assert "\\x1b]0;pwned\\x07" in xml


# ------------------------------------------------ 3. HTML embeds any file


@pytest.fixture
def secret_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A project with a run file in .leakscope/, and a secret file beside the project."""
    secret = tmp_path / "secret" / "settings.py"
    secret.parent.mkdir()
    secret.write_text("".join(f"x{i} = {i}\n" for i in range(10)) + SECRET + "\n")
    project = tmp_path / "project"
    (project / ".leakscope").mkdir(parents=True)
    (project / "app").mkdir()
    (project / "app" / "worker.py").write_text("".join(f"y{i} = {i}\n" for i in range(20)))
    return project, secret


def _html_of(good: dict, project: Path, file: str, cwd: str | None = None,
             line: int = 11) -> str:
    data = _copy(good)
    data["observations"]["cwd"] = cwd or str(project)
    data["sites"][0]["user_frame"] = {"file": file, "line": line, "function": "handle"}
    path = project / ".leakscope" / "last-run.json"
    path.write_text(json.dumps(data))
    out = project / "report.html"
    proc = run_cli("html", str(path), "-o", str(out), cwd=project)
    assert proc.returncode == 0, proc.stderr
    return out.read_text()


@pytest.mark.parametrize("how", ["dotdot", "absolute", "cwd-spoofed", "symlink-out"])
def test_html_embeds_no_file_outside_the_runs_tree(good: dict, secret_tree, how: str) -> None:
    project, secret = secret_tree
    if how == "dotdot":
        page = _html_of(good, project, "../secret/settings.py")
        shown = "../secret/settings.py"
    elif how == "absolute":
        page = _html_of(good, project, str(secret))
        shown = str(secret)
    elif how == "cwd-spoofed":
        page = _html_of(good, project, "settings.py", cwd=str(secret.parent))
        shown = "settings.py"
    else:
        (project / "app" / "linked.py").symlink_to(secret)
        page = _html_of(good, project, "app/linked.py")
        shown = "app/linked.py"
    assert "hunter2" not in page
    assert json.dumps(shown)[1:-1] in page  # the path alone is still shown


def test_html_still_embeds_the_projects_own_source(good: dict, secret_tree) -> None:
    project, _ = secret_tree
    page = _html_of(good, project, "app/worker.py")
    assert "y10 = 10" in page
    page = _html_of(good, project, str(project / "app" / "worker.py"))
    assert "y10 = 10" in page


def test_html_of_a_run_traced_in_place_embeds_its_source(tmp_path: Path) -> None:
    """The ordinary way: trace from the project root, then `html` the default run file."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "leaky.py").write_text(LEAKY)
    proc = run_cli("trace", "app/leaky.py", "--iterations", "5", "--warmup", "1",
                   "--no-holders", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("html", ".leakscope/last-run.json", "-o", "r.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "KEPT.append(bytearray(512))" in (tmp_path / "r.html").read_text()


# ------------------------------------------------ 4. odd files, enumerations


def _special(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "run.json"
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "huge-sparse":
        with path.open("wb") as out:
            out.truncate(300 * 1024 * 1024)
    return path


@pytest.mark.parametrize(("kind", "says"), [
    ("dev-zero", "not a regular file"), ("fifo", "not a regular file"),
    ("huge-sparse", "larger than"),
])
@pytest.mark.parametrize("command", ["report", "check", "html", "diff-base"])
def test_special_or_huge_run_files_are_refused_at_once(
    good: dict, tmp_path: Path, kind: str, says: str, command: str
) -> None:
    path = _special(kind, tmp_path)
    good_path = tmp_path / "good.json"
    good_path.write_text(json.dumps(good))
    proc = run_cli(*_commands(path, good_path)[command], cwd=tmp_path, timeout=30)
    _one_error(proc, EXIT_USAGE, str(path), says)


ENUMS: dict[str, Callable[[dict, str], None]] = {
    "verdict.kind": lambda d, v: d["verdict"].update(kind=v),
    "holders[0].role": lambda d, v: d["holders"][0].update(role=v),
    "holders[0].found_by": lambda d, v: d["holders"][0].update(found_by=v),
    "loops[0].phase": lambda d, v: d["loops"][0].update(phase=v),
    "mode": lambda d, v: d.update(mode=v),
}


@pytest.mark.parametrize(("where", "value"), [
    ("verdict.kind", "reachable x"), ("verdict.kind", "</script>"),
    ("holders[0].role", "[/dim]"), ("holders[0].found_by", "magic"),
    ("loops[0].phase", "x y"), ("mode", "turbo"),
])
@pytest.mark.parametrize("command", ["report", "html"])
def test_enumerations_are_validated_at_load(good: dict, tmp_path: Path, where: str,
                                            value: str, command: str) -> None:
    """A space in verdict.kind stopped the HTML page's script (classList.add)."""
    data = _copy(good)
    ENUMS[where](data, value)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))
    proc = run_cli(*_commands(path, path)[command], cwd=tmp_path)
    _one_error(proc, EXIT_USAGE, str(path), where, json.dumps(value))


# ------------------------------------------- 5. someone else's .leakscope/


def _other_users_dir(path: Path) -> None:
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    else:  # pragma: no cover - depends on who runs the tests
        shutil.rmtree(path)
        others = [p for p in ("/var/tmp", "/tmp") if Path(p).stat().st_uid != os.geteuid()]
        other = Path(others[0]) if others else None
        if other is None:
            pytest.skip("no directory owned by another user to point at")
        path.symlink_to(other)


@pytest.mark.parametrize("how", ["other-owner", "world-writable"])
@pytest.mark.parametrize("command", ["trace", "check"])
def test_a_leakscope_dir_that_is_not_ours_is_refused(tmp_path: Path, how: str,
                                                     command: str) -> None:
    (tmp_path / "w.py").write_text(W)
    shared = tmp_path / ".leakscope"
    if how == "other-owner":
        _other_users_dir(shared)
    else:
        shared.mkdir()
        shared.chmod(0o777)
    proc = run_cli(command, "w.py", "--iterations", "2", "--warmup", "0", "--no-holders",
                   cwd=tmp_path, timeout=60)
    _one_error(proc, EXIT_USAGE, ".leakscope", "owned by another user"
               if how == "other-owner" else "writable by others")
    assert not (shared / "last-run.json").exists()


def test_our_own_leakscope_dir_is_used(tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(W)
    (tmp_path / ".leakscope").mkdir(mode=0o755)
    proc = run_cli("trace", "w.py", "--iterations", "2", "--warmup", "0", "--no-holders",
                   "--quiet", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".leakscope" / "last-run.json").is_file()
    assert not stat.S_IMODE((tmp_path / ".leakscope").stat().st_mode) & stat.S_IWOTH


def test_trace_html_embeds_a_target_outside_the_cwd(tmp_path: Path) -> None:
    """A run made just now trusts the cwd and the target's own directory."""
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "app" / "leaky.py").write_text(LEAKY)
    proc = run_cli("trace", "../app/leaky.py", "--iterations", "5", "--warmup", "1",
                   "--no-holders", "--quiet", "--html", "r.html", cwd=tmp_path / "elsewhere")
    assert proc.returncode == 0, proc.stderr
    assert "KEPT.append(bytearray(512))" in (tmp_path / "elsewhere" / "r.html").read_text()
