"""A worker that builds a list, a dict and a float through their constructors each loop
and keeps none of them.

``list(...)`` and ``dict(...)`` take fresh memory, and their objects go back to the
interpreter's free list of that type when freed: until that list is full (80), the
process's allocated-block count rises by one a loop with nothing kept, then stops.
Not a leak, and not to be read as one in a short run.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

PAIRS = (("id", 1), ("name", "job"))


def iteration() -> None:
    fields = dict(PAIRS)
    names = list(fields)
    float(len(names))
