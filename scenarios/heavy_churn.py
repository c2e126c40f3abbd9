"""A JSON-churning worker: parse 300 records, sort, rebuild, dump; keeps nothing.

Lots of allocation per loop, none of it kept. Not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools
import json
import random

_rng = random.Random(7)
_ids = itertools.count()


def _payload(n: int) -> str:
    records = [
        {"id": i, "name": f"user-{n}-{i}", "score": _rng.random(), "tags": ["a", "b", str(i)]}
        for i in range(300)
    ]
    return json.dumps(records)


def iteration() -> None:
    records = json.loads(_payload(next(_ids)))
    records.sort(key=lambda r: r["score"])
    rebuilt = [{**r, "rank": rank} for rank, r in enumerate(records)]
    json.dumps(rebuilt)
