"""A job logger that attaches a new handler for every job (Monolog-style ``pushHandler``).

Each job adds a handler (with its own lock, formatter and buffer) to one
long-lived logger; every later log call also gets slower.

Expected: leak=yes kind=reachable line=scenarios/job_logger_handlers.py:25
Holder: job_logger_handlers.log.handlers role=registry
"""

from __future__ import annotations

import io
import itertools
import logging

log = logging.getLogger("jobs")
log.setLevel(logging.INFO)
log.propagate = False
_ids = itertools.count()
_sink = io.StringIO()


def run_job(job_id: int) -> None:
    handler = logging.StreamHandler(_sink)
    handler.setFormatter(logging.Formatter(f"[job {job_id}] %(message)s"))
    # The leak: the handler is pushed for the job and never removed.
    log.addHandler(handler)
    log.info("processed")


def iteration() -> None:
    run_job(next(_ids))
    _sink.seek(0)
    _sink.truncate()
