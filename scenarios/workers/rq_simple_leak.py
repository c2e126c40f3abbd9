"""An RQ job that files an audit entry per job in a module-level dict nobody prunes.

The "static array appended to forever" story. ``SimpleWorker`` runs each job
in the worker process itself, so the worker process keeps every entry.

Expected: leak=yes kind=reachable line=scenarios/workers/rq_simple_leak.py:16
Holder: rq_simple_leak.AUDIT
Leaking: rq simple worker
Command: rq worker --burst --worker-class rq.SimpleWorker --path scenarios/workers
"""

AUDIT: dict = {}


def handle(job_number: int) -> int:
    steps = [f"step-{job_number}-{i}" for i in range(12)]
    AUDIT[f"job-{job_number}"] = {"job": job_number, "steps": steps}
    return len(AUDIT)
