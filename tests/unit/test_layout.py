"""The folders are the architecture: who may import whom, checked on the source.

model/ is what a run is and imports nothing else of ours; analysis/ decides on
the model alone; render/ shows a run and its analysis; the modules a measured
process loads (measure/, heap/, integrations/) never reach the parent's side
(drive/, render/, cli/) or the tool's libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "leakscope"

ALLOWED = {
    "model": {"model"},
    "analysis": {"model", "analysis"},
    "render": {"model", "analysis", "render"},
    "measure": {"model", "analysis", "measure", "heap"},
    "heap": {"model", "heap"},
    "integrations": {"model", "measure", "integrations"},
}
# The tool's own libraries: never in the modules a measured process loads.
TOOL_LIBRARIES = {"typer", "click", "rich", "jinja2", "psutil", "memray", "objgraph"}
MEASURED = ("measure", "heap", "integrations")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "templates" not in p.parts)


def _folder(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every import in the file, function-level ones included, as absolute names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
            if node.module == "leakscope":
                found += [(node.lineno, f"leakscope.{a.name}") for a in node.names]
    return found


def _ours(name: str) -> str | None:
    """`leakscope.model.wire` -> `model.wire`; None for other packages and the top."""
    if not name.startswith("leakscope."):
        return None
    return name[len("leakscope."):]


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_folder_imports_only_what_it_may(folder):
    allowed = ALLOWED[folder]
    wrong = []
    for path in _modules():
        if _folder(path) != folder:
            continue
        for line, name in _imports(path):
            ours = _ours(name)
            if ours is None or ours in {"__version__", "tick", "StopTracing"}:
                continue
            if not any(ours == a or ours.startswith(a + ".") for a in allowed):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports leakscope.{ours}")
    assert not wrong, "\n".join(wrong)


def test_measured_side_never_imports_the_tool_libraries_at_module_level():
    """Function-level imports are checked at run time (tests/install); module level here."""
    wrong = []
    for path in _modules():
        if _folder(path) not in MEASURED:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in TOOL_LIBRARIES:
                    wrong.append(f"{path.relative_to(PACKAGE)}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_module_is_left_at_the_top_but_the_public_surface():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py"], top
