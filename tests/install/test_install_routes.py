"""`pip install leakscope` into an app's environment moves none of the app's pins.

The plugin route puts leakscope beside the app's own libraries. An environment
holding an older pydantic 2.x, SQLAlchemy 1.4, Celery 5.3 and Flask 2.x (each
with what it pulls in) is built from the registry; pip's dry run then reports
what installing leakscope would add, and nothing already there may change
version. A leak that lives in the app's pinned release must not vanish under
leakscope.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT

APP_PINS = ["pydantic==2.4.2", "SQLAlchemy==1.4.54", "celery==5.3.6", "Flask==2.0.3",
            "Jinja2==3.0.3", "MarkupSafe==2.1.3", "Werkzeug==2.0.3", "click==8.1.7"]


def _registry_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_installing_leakscope_moves_no_library_the_app_pinned(tmp_path: Path):
    if not _registry_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    venv = tmp_path / "app"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", *APP_PINS], check=True, timeout=600)
    frozen = subprocess.run([*pip, "list", "--format", "json"], check=True, timeout=60,
                            capture_output=True, text=True)
    before = {p["name"].lower().replace("_", "-"): p["version"]
              for p in json.loads(frozen.stdout)}
    report = tmp_path / "report.json"
    subprocess.run([*pip, "install", "-q", "--dry-run", "--report", str(report), str(ROOT)],
                   check=True, timeout=600)
    planned = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in json.loads(report.read_text())["install"]
    }
    moved = {name: f"{before[name]} -> {version}" for name, version in planned.items()
             if name in before and before[name] != version}
    assert not moved, f"pip install leakscope would move the app's pins: {moved}"
    added = sorted(set(planned) - set(before) - {"leakscope"})
    print("pip install leakscope adds:", ", ".join(added) or "nothing")


@pytest.mark.slow
def test_leakscope_as_a_tool_measures_an_app_venv_that_lacks_it(tmp_path: Path):
    """The README's first install route: leakscope in an environment of its own (as pipx
    or uv tool make one), a regular (not editable) install, pointed at an app's venv."""
    if not _registry_reachable():
        pytest.skip("PyPI is not reachable from this machine")
    tool, app = tmp_path / "tool", tmp_path / "app"
    for venv in (tool, app):
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(tool / "bin" / "python"), "-m", "pip", "install", "-q",
                    "--disable-pip-version-check", str(ROOT)], check=True, timeout=600)
    no_leakscope = subprocess.run([str(app / "bin" / "python"), "-c", "import leakscope"],
                                  capture_output=True, cwd=tmp_path)
    assert no_leakscope.returncode != 0
    leakscope = str(tool / "bin" / "leakscope")
    scenarios = ROOT / "scenarios"
    site = next((app / "lib").glob("python3.*/site-packages"))
    before = sorted(p.name for p in site.iterdir())
    traced = subprocess.run(
        [leakscope, "trace", str(scenarios / "registry_dict.py"), "-n", "20", "-q",
         "--python", str(app / "bin" / "python"), "--json", str(tmp_path / "trace.json")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert traced.returncode == 0, traced.stdout + traced.stderr
    run = json.loads((tmp_path / "trace.json").read_text())
    assert run["verdict"]["leak"] and run["holders"][0]["path"] == \
        "registry_dict.RequestContext.registry"
    ran = subprocess.run(
        [leakscope, "run", "--quiet", "--sample", "1", "--units", "60", "--json",
         str(tmp_path / "run.json"), "--", str(app / "bin" / "python"),
         str(scenarios / "tick_consumer.py")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["verdict"]["leak"] and any(
        h["path"] == "tick_consumer.SEEN" for h in run["holders"])
    # Nothing was written into the app's environment: no .pth, no sitecustomize.
    assert sorted(p.name for p in site.iterdir()) == before
