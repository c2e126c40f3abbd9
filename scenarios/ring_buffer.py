"""The last 32 requests kept in a ring buffer (``deque(maxlen=32)``) for a debug page.

Full after 32 loops; each new request then pushes the oldest one out. Not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools
from collections import deque

RECENT: deque = deque(maxlen=32)
_ids = itertools.count()


def iteration() -> None:
    request_id = next(_ids)
    RECENT.append({"id": request_id, "path": f"/orders/{request_id}", "status": 200})
