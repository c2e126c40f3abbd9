"""README.md and docs/: every local link leads somewhere, and every `leakscope ...` line
in their code blocks names a real command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from leakscope.cli import app
from tests.conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_local_links_lead_somewhere(page):
    for target in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in _anchors(linked), f"{page.name}: {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_commands_in_code_blocks_exist(page):
    commands = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for block in FENCE.findall(page.read_text()):
        for match in re.finditer(r"^\$? ?leakscope (\S+)", block, re.M):
            word = match.group(1)
            assert word in commands or word.startswith("-"), f"{page.name}: {match.group(0)}"
