"""A measured process loads only the standard library and leakscope's in-process modules.

Each test runs the same probe twice under the same interpreter, once plainly and
once measured, and compares the top-level modules outside the standard library
that each had loaded: what the measured run has more is what leakscope brought,
and that must be ``leakscope`` alone (no typer, click, rich, jinja2, pydantic,
psutil). The probe writes its module set after every loop, so the last write
is taken at the end of the measured span, after holder walks and analysis
imports in the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

PROBE = '''
import json, os, sys

def _dump():
    names = sorted({m.split(".")[0] for m in list(sys.modules)
                    if m.split(".")[0] not in sys.stdlib_module_names
                    and not m.startswith("_sysconfigdata")  # the stdlib's, per platform
                    and m not in ("probe", "__main__")})
    with open(os.environ["PROBE_OUT"] + ".tmp", "w") as out:
        json.dump(names, out)
    os.replace(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])

KEPT = []

def iteration():
    KEPT.append(object())


def teardown():
    _dump()

if __name__ == "__main__":
    try:
        from leakscope import tick
    except ImportError:
        def tick():
            return None
    for _ in range(int(os.environ.get("PROBE_LOOPS", "40"))):
        iteration()
        tick()
    _dump()
'''

GAINED_ALLOWED = {"leakscope"}


def _memray_modules() -> set[str]:
    """Top-level modules outside the standard library that loading memray's locator brings
    (memray itself, and what its extension imports: rich, its Cython runtime,
    typing_extensions); empty when memray is not installed."""
    code = ("import json, sys\n"
            "before = set(sys.modules)\n"
            "try:\n"
            "    import memray, memray.reporters.module_tools\n"
            "except ImportError:\n"
            "    print('[]'); raise SystemExit\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before\n"
            "    if m.split('.')[0] not in sys.stdlib_module_names})))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    return set(json.loads(done.stdout))


# memray is the one exception, and only where it is the locator in use: fast mode's
# locate loops (trace --fast, check) when the worker's Python can import it.
MEMRAY_MODULES = _memray_modules()


def _plain(probe: Path, out: Path) -> set[str]:
    subprocess.run([sys.executable, str(probe)], check=True, timeout=60,
                   env={**os.environ, "PROBE_OUT": str(out), "PROBE_LOOPS": "3"})
    return set(json.loads(out.read_text()))


@pytest.fixture()
def probe(tmp_path: Path) -> Path:
    path = tmp_path / "probe.py"
    path.write_text(PROBE)
    return path


def _gained(probe: Path, tmp_path: Path, *cli: str, env: dict | None = None) -> set[str]:
    baseline = _plain(probe, tmp_path / "plain.json")
    out = tmp_path / "measured.json"
    out.unlink(missing_ok=True)
    proc = run_cli(*cli, env={"PROBE_OUT": str(out), **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return set(json.loads(out.read_text())) - baseline


def _engine(path: Path) -> str | None:
    return (json.loads(path.read_text())["observations"].get("locator") or {}).get("engine")


@pytest.mark.parametrize("mode", ["--full", "--fast"])
@pytest.mark.parametrize("locator", ["auto", "tracemalloc"])
def test_trace_loads_nothing_of_leakscopes_dependencies(probe, tmp_path, mode, locator):
    extra = ["--fast"] if mode == "--fast" else []
    gained = _gained(probe, tmp_path, "trace", str(probe), "-n", "20", "-q", *extra,
                     "--json", str(tmp_path / "run.json"), env={"LEAKSCOPE_LOCATOR": locator})
    engine = _engine(tmp_path / "run.json")
    if mode == "--full" or locator == "tracemalloc":
        assert engine != "memray"
        assert gained <= GAINED_ALLOWED, gained
    else:
        assert engine == ("memray" if MEMRAY_MODULES else "tracemalloc")
        assert gained <= GAINED_ALLOWED | MEMRAY_MODULES, gained


@pytest.mark.parametrize("locator", ["auto", "tracemalloc"])
def test_check_loads_nothing_of_leakscopes_dependencies(probe, tmp_path, locator):
    gained = _gained(probe, tmp_path, "check", str(probe), "--max-growth", "1MiB",
                     "--json", str(tmp_path / "run.json"), env={"LEAKSCOPE_LOCATOR": locator})
    allowed = GAINED_ALLOWED
    if locator == "auto" and _engine(tmp_path / "run.json") == "memray":
        allowed = GAINED_ALLOWED | MEMRAY_MODULES
    assert gained <= allowed, gained


def test_run_loads_nothing_of_leakscopes_dependencies(probe, tmp_path):
    gained = _gained(probe, tmp_path, "run", "--quiet", "--units", "30", "--json",
                     str(tmp_path / "run.json"), "--", sys.executable, str(probe),
                     env={"PROBE_LOOPS": "40"})
    # `run` arms each process through its start-up hook, leakscope's own sitecustomize.
    assert gained <= GAINED_ALLOWED | {"sitecustomize"}, gained


def test_pytest_plugin_loads_nothing_of_leakscopes_dependencies(tmp_path):
    """The plugin's process is pytest's: compare it with the plugin disabled."""
    (tmp_path / "test_leaky.py").write_text(
        "import pytest\nKEPT = []\n\n"
        "@pytest.mark.leakscope(iterations=10)\n"
        "def test_keeps():\n    KEPT.append([object() for _ in range(20)])\n"
    )
    (tmp_path / "conftest.py").write_text(
        "import json, os, sys\n\n"
        "def pytest_unconfigure(config):\n"
        "    names = sorted({m.split('.')[0] for m in list(sys.modules)\n"
        "                    if m.split('.')[0] not in sys.stdlib_module_names\n"
        "                    and not m.startswith('_sysconfigdata')})\n"
        "    open(os.environ['PROBE_OUT'], 'w').write(json.dumps(names))\n"
    )
    found = {}
    for label, flags in (("plain", ["-p", "no:leakscope"]), ("plugin", [])):
        out = tmp_path / f"{label}.json"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
             *flags, str(tmp_path / "test_leaky.py")],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "PROBE_OUT": str(out)},
        )
        found[label] = set(json.loads(out.read_text()))
    gained = found["plugin"] - found["plain"]
    assert gained <= GAINED_ALLOWED, gained


def _other_pythons(direction: str) -> list[Path]:
    """CPython 3.10-3.13 interpreters under pyenv, older or newer than the tool's."""
    root = Path("/root/.pyenv/versions")
    found = []
    for path in sorted(root.glob("3.1[0-3].*/bin/python")) if root.is_dir() else []:
        minor = int(path.parent.parent.name.split(".")[1])
        if (minor < sys.version_info[1]) if direction == "older" else \
                (minor > sys.version_info[1]):
            found.append(path)
    return found


@pytest.mark.parametrize("direction", ["older", "newer"])
def test_worker_under_another_python_without_leakscope(tmp_path, direction):
    """The tool on one CPython, the worker on another, in a venv that has no leakscope."""
    others = _other_pythons(direction)
    if not others:
        pytest.skip(f"no CPython 3.10-3.13 {direction} than {sys.version.split()[0]} "
                    "on this machine (pyenv)")
    venv = tmp_path / "app"
    subprocess.run([str(others[0]), "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import leakscope"], capture_output=True,
                           cwd=tmp_path)
    assert check.returncode != 0, "the app's venv must not have leakscope"
    scenario = ROOT / "scenarios" / "registry_dict.py"
    proc = run_cli("trace", str(scenario), "-n", "20", "-q", "--python", str(python),
                   "--json", str(tmp_path / "run.json"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["python"] == others[0].parent.parent.name
    assert run["settings"]["python"] == str(python)
    assert run["settings"]["python_from"] == "--python"
    assert f"worker Python {run['python']}: {python} (--python)" in proc.stderr
    assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable"
    assert any(site.get("user_frame") and site["user_frame"]["file"].endswith(
        "registry_dict.py") for site in run["sites"])
    # The worker's own standard library is library, not the user's code.
    prefix = str(others[0].parent.parent)
    assert not any((site.get("user_frame") or {}).get("file", "").startswith(prefix)
                   for site in run["sites"])


@pytest.mark.parametrize(
    ("python", "text"),
    [("/no/such/python", "no such interpreter"), ("/etc/hostname", "cannot run it"),
     ("/bin/true", "not a Python interpreter")],
)
def test_bad_python_is_one_line_exit_2(python, text, tmp_path):
    proc = run_cli("trace", str(ROOT / "scenarios" / "registry_dict.py"), "-n", "5",
                   "--python", python, "--json", str(tmp_path / "run.json"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert text in proc.stderr.strip().splitlines()[-1]


def test_python_older_than_310_is_refused(tmp_path):
    old = sorted(Path("/root/.pyenv/versions").glob("3.[6-9]*/bin/python"))
    if not old:
        pytest.skip("no CPython older than 3.10 on this machine")
    proc = run_cli("trace", str(ROOT / "scenarios" / "registry_dict.py"), "-n", "5",
                   "--python", str(old[-1]), "--json", str(tmp_path / "run.json"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "older than 3.10" in proc.stderr


def test_run_under_an_app_venv_without_leakscope(tmp_path):
    """`leakscope run -- venv/bin/python consumer.py`: the app's Python has no leakscope."""
    venv = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    check = subprocess.run([str(python), "-c", "import leakscope"], capture_output=True,
                           cwd=tmp_path)
    assert check.returncode != 0, "the app's venv must not have leakscope"
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--sample", "1", "--units", "60", "--json", str(out),
                   "--", str(python), str(ROOT / "scenarios" / "tick_consumer.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(out.read_text())
    assert run["verdict"]["leak"] is True, run["verdict"]
    assert any(h["path"] == "tick_consumer.SEEN" for h in run.get("holders", [])), \
        run.get("holders")


def test_private_path_holds_leakscope_alone_and_goes_away(tmp_path):
    """The measured PYTHONPATH entry exposes one name, and is removed when leakscope exits;
    one left by a killed leakscope is removed by the next."""
    import tempfile

    stale = Path(tempfile.gettempdir()) / "leakscope-path-999999999-stale"
    stale.mkdir(exist_ok=True)
    code = ("from leakscope.drive.interpreter import private_path; import os; p = private_path(); "
            "print(p); print(sorted(os.listdir(p)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    path, listing = done.stdout.splitlines()
    assert listing == "['leakscope']"
    assert not Path(path).exists()
    assert not stale.exists()


def test_a_deep_holder_unnamed_for_want_of_objgraph_says_so(tmp_path):
    """The app's Python has no objgraph: the back-reference search cannot run in the
    worker, so a holder deeper than the forward walk goes unnamed, and one line says
    why and what would name it (before, only the run file's observations knew)."""
    venv = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    out = tmp_path / "run.json"
    proc = run_cli("trace", str(ROOT / "scenarios" / "deep_registry.py"), "-n", "20",
                   "--python", str(venv / "bin" / "python"), "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads(out.read_text())
    assert run["verdict"]["leak"] is True, run["verdict"]
    assert not [h for h in run["holders"] if h["growing"]], run["holders"]
    notes = [line for line in proc.stderr.splitlines() if "back-reference search" in line]
    assert len(notes) == 1, proc.stderr
    assert "objgraph is not importable" in notes[0] and "install objgraph" in notes[0]


DEEP_PROBE = PROBE.split("KEPT = []")[0] + '''
sys.path.insert(0, os.environ["SCENARIOS"])
import deep_registry  # a holder deeper than the forward walk goes


def iteration():
    deep_registry.iteration()


def teardown():
    _dump()
'''


def test_the_back_reference_search_loads_objgraph_only_in_a_forked_copy(tmp_path):
    """A holder found through objgraph's back-reference chain (deep_registry): the search
    runs in a forked copy, so the worker never imports objgraph nor has its garbage
    collected by it."""
    probe = tmp_path / "deep_probe.py"
    probe.write_text(DEEP_PROBE)
    env = {"SCENARIOS": str(ROOT / "scenarios")}
    out = tmp_path / "measured.json"
    proc = run_cli("trace", str(probe), "-q", "--json", str(tmp_path / "run.json"),
                   env={"PROBE_OUT": str(out), **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    holders = run["holders"]
    assert holders and holders[0]["found_by"] == "backrefs", holders
    assert holders[0]["path"].endswith(".backend.store.entries"), holders[0]["path"]
    # Found once, at the end: its rate is the items made while traced (one a loop).
    assert holders[0]["items_per_iteration"] == pytest.approx(1.0), holders[0]
    subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "import runpy; runpy.run_path(sys.argv[2], run_name='probe')['teardown']()",
                    str(ROOT / "scenarios"), str(probe)],
                   check=True, timeout=60, env={**os.environ, **env,
                                                "PROBE_OUT": str(tmp_path / "plain.json")})
    baseline = set(json.loads((tmp_path / "plain.json").read_text()))
    gained = set(json.loads(out.read_text())) - baseline - {"deep_probe"}  # itself, by name
    assert gained <= GAINED_ALLOWED, gained
