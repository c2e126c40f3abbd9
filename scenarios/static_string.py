"""A class-level string concatenated on every request (seed 004's ``Test::$string .= ...``).

One block that keeps getting bigger: the block count stays flat while the
bytes grow, so only a byte-based rule sees it.

Expected: leak=yes kind=reachable line=scenarios/static_string.py:19
"""

from __future__ import annotations


class Test:
    string: str = ""


def iteration() -> None:
    param = "param2=value;"
    # The leak: the string only ever grows.
    Test.string += param
