"""A logger made per job with a unique name: ``logging.getLogger(f"job.{job_id}")``.

Loggers are never freed: the logging manager keeps every name in its
``loggerDict`` for the life of the process.

Expected: leak=yes kind=reachable line=scenarios/logger_per_job.py:20
Holder: logging.Logger.manager.loggerDict role=registry
"""

from __future__ import annotations

import itertools
import logging

_ids = itertools.count()


def run_job(job_id: int) -> None:
    log = logging.getLogger(f"job.{job_id}")
    log.debug("processing job %s", job_id)


def iteration() -> None:
    run_job(next(_ids))
