"""A ``deque(maxlen=1000)`` of recent request ids for a health page: it fills for
the first thousand requests and then stays full. A 50-loop run sees it filling;
its ``maxlen`` says it is bounded. Not a leak.

Expected: leak=no kind=none line=-
Bounded: deque_filling.RECENT_IDS bound=1000
"""

from __future__ import annotations

import itertools
from collections import deque

RECENT_IDS: deque = deque(maxlen=1000)
_ids = itertools.count()


def iteration() -> None:
    RECENT_IDS.append(f"request-{next(_ids)}")
