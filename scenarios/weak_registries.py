"""Per-request objects registered in a ``WeakSet`` and a ``WeakValueDictionary``:
the registries forget each object when the request ends. Not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import itertools
import weakref

_ids = itertools.count()


class Session:
    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self.data = {"cart": [session_id]}


LIVE_SESSIONS: weakref.WeakSet = weakref.WeakSet()
BY_ID: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def iteration() -> None:
    session = Session(next(_ids))
    LIVE_SESSIONS.add(session)
    BY_ID[session.session_id] = session
