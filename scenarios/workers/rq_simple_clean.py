"""An RQ job that builds a report and drops it, run by ``SimpleWorker``: no leak.

Expected: leak=no kind=none
Command: rq worker --burst --worker-class rq.SimpleWorker --path scenarios/workers
"""


def handle(job_number: int) -> int:
    rows = [{"n": i, "text": str(i) * 8} for i in range(40)]
    return sum(len(row["text"]) for row in rows) + job_number
