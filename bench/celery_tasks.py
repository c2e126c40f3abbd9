"""The Celery app `bench/workers_bench.py` runs: one realistic task that keeps nothing."""

import json
import os
from typing import Any

from celery import Celery

app = Celery("celery_tasks", broker=os.environ["LEAKSCOPE_BENCH_BROKER"])
app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=1,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(name="celery_tasks.render")
def render(order_id: int) -> int:
    """Build an order document of a few hundred objects, serialise it, drop it."""
    lines: list[dict[str, Any]] = [
        {"sku": f"sku-{order_id}-{i}", "qty": i % 7, "price": i * 1.25} for i in range(150)
    ]
    document = {"order": order_id, "lines": lines, "total": sum(x["price"] for x in lines)}
    return len(json.dumps(document))
