"""A class-level list appended to on every request (seed 004's ``Test::$array[] = ...``).

Expected: leak=yes kind=reachable line=scenarios/static_array.py:20
holder=static_array.Test.array role=registry
"""

from __future__ import annotations

import itertools

_ids = itertools.count()


class Test:
    array: list[str] = []


def handle(param: str) -> None:
    Test.array.append(param)  # the leak: never cleared


def iteration() -> None:
    handle(f"request-{next(_ids)}")
