"""Celery tasks that register a fresh callback on a class-level list, one per task.

The service-provider story from the seeds, as a Celery task: every task run
appends a closure to ``Signals.on_order_paid`` and nothing ever removes it.
Under ``--pool=prefork`` each pool child runs tasks, so each child leaks;
the main process runs none.

Expected: leak=yes kind=reachable line=scenarios/workers/celery_leak.py:34
Holder: celery_leak.Signals.on_order_paid
Leaking: celery pool child
Command: celery -A celery_leak worker --pool=prefork --concurrency=2 -O fair --loglevel=WARNING
"""

import os

from celery import Celery

app = Celery("celery_leak", broker=os.environ.get("LEAKSCOPE_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


class Signals:
    on_order_paid: list = []


@app.task(name="celery_leak.handle")
def handle(order_id: int) -> int:
    payload = {"order": order_id, "lines": [order_id] * 20}

    def notify() -> dict:
        return payload

    Signals.on_order_paid.append(notify)
    return len(payload["lines"])
