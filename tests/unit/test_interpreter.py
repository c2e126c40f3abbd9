"""Which Python runs the worker: --python, then $VIRTUAL_ENV, then ./.venv, then leakscope's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from leakscope.drive.interpreter import choose
from leakscope.model.errors import UsageError


def fake_venv(root: Path) -> Path:
    """A directory shaped like a virtualenv whose python is this test's interpreter."""
    (root / "bin").mkdir(parents=True)
    os.symlink(sys.executable, root / "bin" / "python")
    return root / "bin" / "python"


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    active = fake_venv(tmp_path / "active")
    project = tmp_path / "project"
    local = fake_venv(project / ".venv")
    explicit = fake_venv(tmp_path / "explicit")
    return {"active": active, "project": project, "local": local, "explicit": explicit}


def test_explicit_python_comes_first(places: dict[str, Path]) -> None:
    chosen = choose(str(places["explicit"]), {"VIRTUAL_ENV": str(places["active"].parents[1])},
                    places["project"])
    assert (chosen.path, chosen.chosen_by) == (str(places["explicit"]), "--python")


def test_active_virtualenv_comes_before_the_project_venv(places: dict[str, Path]) -> None:
    chosen = choose(None, {"VIRTUAL_ENV": str(places["active"].parents[1])}, places["project"])
    assert (chosen.path, chosen.chosen_by) == (str(places["active"]), "$VIRTUAL_ENV")


def test_project_venv_when_no_virtualenv_is_active(places: dict[str, Path]) -> None:
    chosen = choose(None, {}, places["project"])
    assert (chosen.path, chosen.chosen_by) == (str(places["local"]), "./.venv")


def test_a_virtualenv_without_python_falls_through_to_the_project_venv(
    places: dict[str, Path], tmp_path: Path,
) -> None:
    empty = tmp_path / "empty-venv"
    empty.mkdir()
    chosen = choose(None, {"VIRTUAL_ENV": str(empty)}, places["project"])
    assert chosen.chosen_by == "./.venv"


def test_leakscopes_own_python_last(tmp_path: Path) -> None:
    chosen = choose(None, {}, tmp_path)
    assert (chosen.path, chosen.chosen_by) == (sys.executable, "leakscope's own")
    assert chosen.describe().startswith(f"worker Python {chosen.version}: {sys.executable}")


def test_a_missing_explicit_python_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such interpreter"):
        choose(str(tmp_path / "nope" / "python"), {}, tmp_path)
