"""A module cache filled with values a helper builds: the list is made in `build`,
the insertion is the caller's line, and that line is the one to fix.

Expected: leak=yes kind=reachable line=scenarios/cache_built_values.py:17
Holder: cache_built_values.CACHE role=registry added=scenarios/cache_built_values.py:22
"""

from __future__ import annotations

import itertools

CACHE: dict[int, list[int]] = {}
_keys = itertools.count()


def build(key: int) -> list[int]:
    return [key] * 8


def iteration() -> None:
    key = next(_keys)
    CACHE[key] = build(key)
