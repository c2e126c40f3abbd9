"""A worker that builds a list, a dict and a float through their constructors each loop
and keeps none of them.

``list(...)`` and ``dict(...)`` take fresh memory, and their objects go back to the
interpreter's free list of that type when freed: until that list is full (80), the
process's allocated-block count rises by one a loop with nothing kept, then stops.
Not a leak: a run long enough to see the count stop (``check``'s 200 loops) says so;
a 50-loop run can still read it as one block a loop (README, "Reading the
verdict").

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

PAIRS = (("id", 1), ("name", "job"))


def iteration() -> None:
    fields = dict(PAIRS)
    names = list(fields)
    float(len(names))
