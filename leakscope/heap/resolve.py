"""Containers found again in the worker by the chain of ids a copy's walk reached them by.

A copy that walked or described the heap names containers by ``id``; the
worker (or a copy that did not walk) needs the live objects: the growers for
the line locator, the bounded containers for the lines their newest entries
were made at. Scanning ``gc.get_objects()`` for those ids made an int per
object (a second under tracemalloc in a framework's worker), and missed the
dicts the gc does not track (a dict of atoms: a task-id cache's ``_data``).
Here each step of the chain is a referent of the step before, found within
a few hops of ``gc.get_referents``, which runs no code of the worker's.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import Any

# A walk's step from an object to a child is at most this many referents deep
# (a function's closure tuple, its cell, the cell's contents) ...
MAX_HOPS = 3
# ... and one step looks at no more referents than this.
MAX_REFERENTS = 50_000


def find_by_chain(chain: Sequence[int]) -> Any | None:
    """The object at the end of ``chain`` (ids from a module down), or None when a step
    is no longer there (replaced or freed since the walk)."""
    if not chain:
        return None
    current = next((module for module in list(sys.modules.values())
                    if id(module) == chain[0]), None)
    for wanted in chain[1:]:
        if current is None:
            return None
        current = _referent_with_id(current, wanted)
    return current


def _referent_with_id(obj: Any, wanted: int) -> Any | None:
    frontier = [obj]
    looked = 0
    for _ in range(MAX_HOPS):
        following = []
        for parent in frontier:
            for child in gc.get_referents(parent):
                if id(child) == wanted:
                    return child
                following.append(child)
                looked += 1
                if looked > MAX_REFERENTS:
                    return None
        frontier = following
    return None
