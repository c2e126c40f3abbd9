"""Bad input through the real CLI: one ``leakscope: error:`` line, the contract's exit
code, and never a traceback from leakscope itself (only the worker's own, when the
worker raised).

Each case writes its worker into ``tmp_path`` and runs from there. Settings are
the smallest that reach the failure (few loops, no holder search): the verdict
never matters here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import leakscope
from tests.conftest import load_json, run_cli

LEAKSCOPE_DIR = str(Path(leakscope.__file__).resolve().parent)
FAST = ["--iterations", "3", "--warmup", "1", "--no-holders"]
EXIT_USAGE = 2
EXIT_WORKER = 3
EXIT_INTERRUPTED = 130


def write(root: Path, name: str, source: str | bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(textwrap.dedent(source))
    return path


def error_line(proc: subprocess.CompletedProcess, code: int, *, worker_raised: bool = False) -> str:
    """Check the failure's shape and return its one error line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("leakscope: error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip("\n").splitlines()[-1] == errors[0], "the error line comes last"
    assert "Traceback" not in proc.stdout, proc.stdout
    if worker_raised:
        # The worker's traceback, once, with none of leakscope's or runpy's frames.
        assert proc.stderr.count("Traceback (most recent call last)") >= 1, proc.stderr
        frames = re.findall(r'^\s*File "([^"]+)", line \d+', proc.stderr, re.M)
        assert frames, proc.stderr
        for filename in frames:
            assert not filename.startswith(LEAKSCOPE_DIR), proc.stderr
            assert "runpy" not in filename and "importlib" not in filename, proc.stderr
    else:
        assert "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def trace(tmp_path: Path, target: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "trace", target, "--json", str(tmp_path / "out" / "run.json"), *FAST, *extra,
        cwd=tmp_path, timeout=120,
    )


# ------------------------------------------------------------- the worker itself


@dataclass
class Case:
    """A worker (or a path) that ``leakscope trace`` must refuse."""

    files: dict[str, str | bytes]
    target: str
    code: int
    says: list[str]
    extra: list[str] = field(default_factory=list)
    worker_raised: bool = False


COUNTED = """\
    import {module}
    n = 0

    def iteration():
        global n
        n += 1
        if n == 3:
            {action}
"""

CASES: dict[str, Case] = {
    "missing-file": Case({}, "missing.py", EXIT_USAGE, ["missing.py", "no such file"]),
    "directory": Case({"adir.py/keep.txt": ""}, "adir.py", EXIT_USAGE,
                      ["adir.py", "is a directory"]),
    "invalid-bytes": Case(
        {"binary.py": b"def iteration():\n    return '\xff\xfe'\n"}, "binary.py", EXIT_USAGE,
        ["binary.py:2", "not valid utf-8"],
    ),
    "null-bytes": Case({"nul.py": b"def iteration():\n    pass\x00\n"}, "nul.py", EXIT_USAGE,
                       ["nul.py", "null bytes"]),
    "unknown-encoding": Case(
        {"cookie.py": b"# -*- coding: klingon -*-\ndef iteration():\n    pass\n"}, "cookie.py",
        EXIT_USAGE, ["cookie.py", "klingon"],
    ),
    "syntax-error": Case(
        {"broken.py": "import os\n\ndef iteration(:\n    pass\n"}, "broken.py", EXIT_USAGE,
        ["broken.py:3", "syntax error"],
    ),
    "no-iteration-no-tick": Case({"plain.py": "x = 1\nprint(x)\n"}, "plain.py", EXIT_USAGE,
                                 ["plain.py", "iteration()", "tick()"]),
    "no-such-function": Case({"w.py": "def iteration():\n    pass\n"}, "w.py:nosuchfunc",
                             EXIT_USAGE, ["w.py", "nosuchfunc"]),
    "not-callable": Case({"w.py": "handle = 5\n"}, "w.py:handle", EXIT_USAGE,
                         ["w.py:handle", "not callable"]),
    "no-such-module": Case({}, "no.such.module:func", EXIT_USAGE,
                           ["no.such.module:func", "no module named"]),
    "no-such-submodule": Case({"pkg/__init__.py": ""}, "pkg.nomod:func", EXIT_USAGE,
                              ["no module named 'pkg.nomod'"]),
    "raises-in-iteration": Case(
        {"raiser.py": """\
            def lookup(table):
                return table["missing"]

            def handle():
                try:
                    lookup({})
                except KeyError as exc:
                    raise ValueError("order 42 has no customer") from exc

            def iteration():
                handle()
        """},
        "raiser.py", EXIT_WORKER, ["raiser.py", "ValueError: order 42 has no customer"],
        worker_raised=True,
    ),
    "raises-at-import": Case(
        {"importer.py": 'raise RuntimeError("no config")\n\ndef iteration():\n    pass\n'},
        "importer.py", EXIT_WORKER, ["importer.py", "imported", "RuntimeError: no config"],
        worker_raised=True,
    ),
    "missing-dependency": Case(
        {"pkg/__init__.py": "", "pkg/app.py": "import leakscope_no_such_dep\n"},
        "pkg.app:handle", EXIT_WORKER, ["pkg.app:handle", "leakscope_no_such_dep"],
        worker_raised=True,
    ),
    "raises-in-setup": Case(
        {"s.py": "def setup():\n    raise OSError('no db')\n\ndef iteration():\n    pass\n"},
        "s.py", EXIT_WORKER, ["s.py", "setup()", "OSError: no db"], worker_raised=True,
    ),
    "raises-in-teardown": Case(
        {"t.py": "def iteration():\n    pass\n\ndef teardown():\n    raise OSError('gone')\n"},
        "t.py", EXIT_WORKER, ["t.py", "teardown()", "OSError: gone"], worker_raised=True,
    ),
    "sys-exit-0": Case({"e.py": COUNTED.format(module="sys", action="sys.exit(0)")}, "e.py",
                       EXIT_WORKER, ["e.py", "sys.exit(0)", "loop 2"]),
    "sys-exit-2": Case({"e.py": COUNTED.format(module="sys", action="sys.exit(2)")}, "e.py",
                       EXIT_WORKER, ["e.py", "sys.exit(2)"]),
    "sys-exit-bare": Case({"e.py": COUNTED.format(module="sys", action="sys.exit()")}, "e.py",
                          EXIT_WORKER, ["e.py", "sys.exit()"]),
    "sys-exit-message": Case({"e.py": COUNTED.format(module="sys", action="sys.exit('bye')")},
                             "e.py", EXIT_WORKER, ["e.py", "sys.exit('bye')"]),
    "sys-exit-at-import": Case({"e.py": "import sys\nsys.exit(4)\n\ndef iteration():\n    pass\n"},
                               "e.py", EXIT_WORKER, ["e.py", "sys.exit(4)", "imported"]),
    "os-exit-0": Case({"o.py": COUNTED.format(module="os", action="os._exit(0)")}, "o.py",
                      EXIT_WORKER, ["o.py", "exited with code 0"]),
    "killed": Case(
        {"k.py": COUNTED.format(module="os, signal",
                                action="os.kill(os.getpid(), signal.SIGKILL)")},
        "k.py", EXIT_WORKER, ["k.py", "SIGKILL"],
    ),
    "hangs": Case({"h.py": COUNTED.format(module="time", action="time.sleep(60)")}, "h.py",
                  EXIT_WORKER, ["h.py", "hung", "loop 2"], extra=["--timeout", "1"]),
    "hangs-at-import": Case(
        {"hi.py": "import time\ntime.sleep(60)\n\ndef iteration():\n    pass\n"},
        "hi.py", EXIT_WORKER, ["hi.py", "hung while being imported"], extra=["--timeout", "1"],
    ),
    "tick-never-reached": Case(
        {"loop.py": """\
            import time
            import leakscope

            def handle(message):
                leakscope.tick()

            while True:  # the loop forgets to call handle()
                time.sleep(0.01)
        """},
        "loop.py", EXIT_USAGE, ["loop.py", "no leakscope.tick()"], extra=["--timeout", "1"],
    ),
    "tick-script-ends": Case(
        {"once.py": """\
            import leakscope

            def later():
                leakscope.tick()

            print("nothing to do")
        """},
        "once.py", EXIT_USAGE, ["once.py", "without calling leakscope.tick()"],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_trace_refuses(name: str, tmp_path: Path) -> None:
    case = CASES[name]
    for relative, source in case.files.items():
        write(tmp_path, relative, source)
    proc = trace(tmp_path, case.target, *case.extra)
    line = error_line(proc, case.code, worker_raised=case.worker_raised)
    for fragment in case.says:
        assert fragment in line, line
    if case.code == EXIT_USAGE:
        assert not (tmp_path / "out" / "run.json").exists(), "bad input leaves no run file"


def test_dangling_symlink(tmp_path: Path) -> None:
    (tmp_path / "worker.py").symlink_to(tmp_path / "deleted.py")
    line = error_line(trace(tmp_path, "worker.py"), EXIT_USAGE)
    assert "worker.py" in line and "dangling symlink" in line, line


def test_worker_traceback_keeps_its_own_frames(tmp_path: Path) -> None:
    """Leakscope's frames are taken out; every frame of the worker stays, chain included."""
    write(tmp_path, "raiser.py", CASES["raises-in-iteration"].files["raiser.py"])
    proc = trace(tmp_path, "raiser.py")
    error_line(proc, EXIT_WORKER, worker_raised=True)
    stack = proc.stderr
    assert "KeyError: 'missing'" in stack
    assert "The above exception was the direct cause" in stack
    for function in ("lookup", "handle", "iteration"):
        assert f", in {function}\n" in stack, stack
    assert stack.index("Traceback") < stack.index("leakscope: error:")


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["trace", "w.py", "--bogus"], "--bogus"),
        (["trace", "w.py", "--iterations", "0"], "--iterations"),
        (["trace", "w.py", "--iterations", "many"], "--iterations"),
        (["trace", "w.py", "--warmup", "soon"], "--warmup"),
        (["trace", "w.py", "--warmup", "-1"], "--warmup"),
        (["trace", "w.py", "--frames", "0"], "--frames"),
        (["trace", "w.py", "--timeout", "0"], "--timeout"),
        (["trace", "w.py", "--timeout", "-5"], "--timeout"),
        (["trace", "w.py", "--timeout", "soon"], "--timeout"),
        (["trace", "w.py", "--top", "-1"], "--top"),
        (["trace", "w.py", "--memory-limit", "12XB"], "--memory-limit"),
        (["trace", "w.py", "--memory-limit", "-1MiB"], "--memory-limit"),
        (["trace", "w.py", "--json", "adir"], "is a directory"),
        (["trace", "w.py", "--json", "w.py/run.json"], "cannot write"),
        (["trace"], "TARGET"),
        (["frobnicate"], "frobnicate"),
        (["report"], "RUN.json"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_options(args: list[str], says: str, tmp_path: Path) -> None:
    write(tmp_path, "w.py", "def iteration():\n    pass\n")
    (tmp_path / "adir").mkdir()
    line = error_line(run_cli(*args, cwd=tmp_path), EXIT_USAGE)
    assert says.lower() in line.lower(), line


# ----------------------------------------------------------- report RUN.json


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    write(root, "ok.py", "def iteration():\n    pass\n")
    out = root / "run.json"
    proc = run_cli("trace", "ok.py", "--json", str(out), "--iterations", "5", "--warmup", "0",
                   "--no-holders", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return out


def _mutated(good: Path, change) -> str:
    data = json.loads(good.read_text())
    change(data)
    return json.dumps(data)


REPORT_CASES = {
    "corrupt-json": (lambda good: "{not json", "not JSON"),
    "empty": (lambda good: "", "not JSON"),
    "truncated": (lambda good: good.read_text()[: len(good.read_text()) // 2], "not JSON"),
    "not-utf8": (lambda good: b"\xff\xfe{}", "cannot read"),
    "foreign-schema": (lambda good: json.dumps({"schema": "coverage.py/7", "files": {}}),
                       "not a leakscope run file"),
    "no-schema": (lambda good: json.dumps({"meta": {"version": "7.4"}}), "no schema"),
    "top-level-list": (lambda good: "[1, 2, 3]", "not a leakscope run file"),
    "loops-not-list": (lambda good: _mutated(good, lambda d: d.update(loops="x")), "loops"),
    "verdict-wrong-type": (
        lambda good: _mutated(good, lambda d: d["verdict"].update(confidence="high")),
        "verdict.confidence",
    ),
    "verdict-missing-field": (
        lambda good: _mutated(good, lambda d: d["verdict"].pop("kind")), "verdict has no 'kind'",
    ),
    "verdict-summary-null": (
        lambda good: _mutated(good, lambda d: d["verdict"].update(summary=None)),
        "verdict.summary",
    ),
    "loop-wrong-type": (
        lambda good: _mutated(good, lambda d: d["loops"][1].update(traced_bytes="12")),
        "loops[1].traced_bytes",
    ),
    "site-not-object": (lambda good: _mutated(good, lambda d: d.update(sites=[3])), "sites[0]"),
    "holders-not-list": (lambda good: _mutated(good, lambda d: d.update(holders="x")), "holders"),
}


@pytest.mark.parametrize("name", list(REPORT_CASES))
def test_report_refuses(name: str, good_run: Path, tmp_path: Path) -> None:
    make, says = REPORT_CASES[name]
    content = make(good_run)
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    line = error_line(run_cli("report", str(path), cwd=tmp_path), EXIT_USAGE)
    assert str(path) in line and says in line, line


def test_report_missing_file(tmp_path: Path) -> None:
    line = error_line(run_cli("report", "nowhere.json", cwd=tmp_path), EXIT_USAGE)
    assert "nowhere.json" in line and "no such run file" in line, line


def test_report_directory(tmp_path: Path) -> None:
    (tmp_path / "runs.json").mkdir()
    line = error_line(run_cli("report", "runs.json", cwd=tmp_path), EXIT_USAGE)
    assert "is a directory" in line, line


def test_report_reads_the_good_run(good_run: Path) -> None:
    """The baseline the mutations start from is itself accepted."""
    proc = run_cli("report", str(good_run), cwd=good_run.parent)
    assert proc.returncode == 0, proc.stderr
    assert "NO LEAK" in proc.stdout


# --------------------------------------------------------------------- Ctrl-C


SLOW = """\
    import time

    KEPT = []

    def iteration():
        KEPT.append(object())
        time.sleep(0.05)
"""


def test_ctrl_c_saves_a_partial_run(tmp_path: Path) -> None:
    write(tmp_path, "slow.py", SLOW)
    out = tmp_path / "run.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "leakscope", "trace", "slow.py", "--iterations", "1000",
         "--warmup", "2", "--no-holders", "--json", str(out)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, COLUMNS="120", NO_COLOR="1"), start_new_session=True,
    )
    seen = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.match(r"loop \d+:", line):
                seen += 1
                if seen == 6:
                    break
        assert seen == 6, "the run printed no measured loops"
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr + stdout, stderr
    assert "interrupted" in stderr
    run = load_json(out)
    assert run["schema"] == "leakscope.run/1"
    measured = [loop for loop in run["loops"] if not loop["warmup"]]
    assert 6 <= len(measured) < 1000
    assert [loop["index"] for loop in run["loops"]] == list(range(len(run["loops"])))
    assert run["verdict"]["partial"] is True
    assert "Partial run" in run["verdict"]["summary"]
    assert run["observations"]["interrupted"] is True
    # What a reader of the saved file gets: `report` accepts it and says partial.
    report = run_cli("report", str(out), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "partial" in report.stdout.lower()


def test_sigint_to_the_worker_alone_is_a_partial_run(tmp_path: Path) -> None:
    """SIGINT that reaches only the traced process (kill -INT from elsewhere, or the
    worker raising KeyboardInterrupt) stops the run early: partial, exit 130, not a
    full verdict with exit 0."""
    write(tmp_path, "w.py", COUNTED.format(module="os, signal",
                                           action="os.kill(os.getpid(), signal.SIGINT)"))
    proc = trace(tmp_path, "w.py", "--iterations", "20")
    assert proc.returncode == EXIT_INTERRUPTED, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    run = load_json(tmp_path / "out" / "run.json")
    assert run["verdict"]["partial"] is True
    assert len(run["loops"]) == 2


# ------------------------------------------------------ the forms of TARGET


ARGV = """\
    import json
    import sys

    def setup():
        with open("argv.json", "w") as out:
            json.dump(sys.argv, out)

    def iteration():
        pass
"""


def test_arguments_after_double_dash_reach_the_worker(tmp_path: Path) -> None:
    write(tmp_path, "args.py", ARGV)
    proc = trace(tmp_path, "args.py", "--", "orders", "--flag", "-n", "7")
    assert proc.returncode == 0, proc.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[1:] == ["orders", "--flag", "-n", "7"]
    assert Path(argv[0]).name == "args.py"
    assert load_json(tmp_path / "out" / "run.json")["settings"]["iterations"] == 3


def test_worker_directory_is_on_sys_path(tmp_path: Path) -> None:
    write(tmp_path, "app/helpers.py", "def work():\n    return 1\n")
    write(tmp_path, "app/worker.py", "from helpers import work\n\ndef iteration():\n    work()\n")
    proc = trace(tmp_path, "app/worker.py")
    assert proc.returncode == 0, proc.stderr


LEAKY = """\
    CALLS = []


    def handle():
        CALLS.append(object())


    def teardown():
        with open("calls.txt", "w") as out:
            out.write(str(len(CALLS)))
"""


@pytest.mark.parametrize(
    ("files", "target", "site"),
    [
        ({"leaky.py": LEAKY}, "leaky.py:handle", "leaky.py:5"),
        ({"svc/__init__.py": "", "svc/jobs.py": LEAKY}, "svc.jobs:handle", "svc/jobs.py:5"),
    ],
    ids=["file:func", "module:func"],
)
def test_function_targets(files: dict[str, str], target: str, site: str, tmp_path: Path) -> None:
    for relative, source in files.items():
        write(tmp_path, relative, source)
    out = tmp_path / "run.json"
    proc = run_cli("trace", target, "--json", str(out), "--iterations", "10", "--warmup", "2",
                   "--no-holders", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    assert run["target"] == target
    assert len(run["loops"]) == 12
    # The named function ran once per loop, and teardown() ran too.
    assert (tmp_path / "calls.txt").read_text() == "12"
    assert run["verdict"]["leak"] is True, run["verdict"]["summary"]
    growing = [s for s in run["sites"] if s["growing"]]
    frame = growing[0]["user_frame"]
    assert f"{frame['file']}:{frame['line']}" == site
