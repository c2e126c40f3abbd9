"""A bounded cache fed unique keys: it fills to 16 entries, then evicts the oldest.

Memory rises during the first loops and then plateaus. Not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

MAX_ENTRIES = 16
_cache: OrderedDict[str, bytes] = OrderedDict()
_ids = itertools.count()


def lookup(key: str) -> bytes:
    if key not in _cache:
        _cache[key] = key.encode() * 20
        if len(_cache) > MAX_ENTRIES:
            _cache.popitem(last=False)
    return _cache[key]


def iteration() -> None:
    lookup(f"user:{next(_ids)}")
