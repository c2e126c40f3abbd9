"""Lazy start-up work spread over the first 12 requests: one template compiled per
request until all 12 are cached. Growth that stops is warm-up, not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools

TEMPLATES = [f"page-{i}" for i in range(12)]
_compiled: dict[str, list[str]] = {}
_ids = itertools.count()


def render(name: str) -> str:
    if name not in _compiled:
        _compiled[name] = [f"{name}:{i}" for i in range(40)]
    return "".join(_compiled[name][:3])


def iteration() -> None:
    n = next(_ids)
    # Requests walk through the pages in order, so page k is first seen at request k.
    render(TEMPLATES[min(n, len(TEMPLATES) - 1)])
    render(TEMPLATES[n % len(TEMPLATES)])
