"""Logging handlers and signal-style callbacks registered once at start-up, then
used on every request. Registration that does not repeat is not a leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import io
import itertools
import logging

log = logging.getLogger("app.requests")
log.setLevel(logging.INFO)
log.propagate = False
_sink = io.StringIO()
ON_REQUEST: list = []
_ids = itertools.count()


def setup() -> None:
    log.addHandler(logging.StreamHandler(_sink))
    ON_REQUEST.append(lambda request_id: log.info("request %s", request_id))


def iteration() -> None:
    request_id = next(_ids)
    for callback in ON_REQUEST:
        callback(request_id)
    _sink.seek(0)
    _sink.truncate()
