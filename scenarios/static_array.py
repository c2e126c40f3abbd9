"""A class-level list appended to on every request (seed 004's ``Test::$array[] = ...``).

Laravel-S's docs warn that appending forever to a static property overflows
memory; this is the Python version of that controller.

Expected: leak=yes kind=reachable line=scenarios/static_array.py:26
Holder: static_array.Test.array role=registry
"""

from __future__ import annotations

import itertools

_ids = itertools.count()


class Test:
    array: list[str] = []


def handle(param: str) -> None:
    Test.array.append(param)  # the leak: nothing ever clears Test.array


def iteration() -> None:
    handle(f"request-{next(_ids)}-payload")
