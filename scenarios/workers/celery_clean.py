"""Celery tasks that keep nothing: each task's data is dropped when it returns.

Run under ``--pool=solo``, so the main process runs the tasks itself. The
only state kept across tasks is a bounded ``deque`` of recent order ids,
which fills to its ``maxlen`` and stays there.

Expected: leak=no kind=none
Command: celery -A celery_clean worker --pool=solo --loglevel=WARNING
"""

import collections
import os

from celery import Celery

app = Celery("celery_clean", broker=os.environ.get("LEAKSCOPE_BROKER", "redis://127.0.0.1:6379/0"))
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)

RECENT_ORDERS: collections.deque = collections.deque(maxlen=20)


@app.task(name="celery_clean.handle")
def handle(order_id: int) -> int:
    lines = [{"sku": f"sku-{order_id}-{i}", "qty": i} for i in range(25)]
    RECENT_ORDERS.append(order_id)
    return sum(line["qty"] for line in lines)
