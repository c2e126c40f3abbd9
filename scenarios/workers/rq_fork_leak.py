"""The same leaking RQ job, under the default forking ``Worker``: the worker stays clean.

Each job runs in a work horse forked for it, and the horse exits after the
job: the audit entry dies with it. leakscope measures the worker process per
job and must not blame the jobs' growth on it (no leak, no site in this
file, no holder).

Expected: leak=no kind=none
Command: rq worker --burst --path scenarios/workers
"""

AUDIT: dict = {}


def handle(job_number: int) -> int:
    steps = [f"step-{job_number}-{i}" for i in range(12)]
    AUDIT[f"job-{job_number}"] = {"job": job_number, "steps": steps}
    return len(AUDIT)
