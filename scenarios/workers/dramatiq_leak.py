"""A Dramatiq actor that caches every message's result in a module-level dict, forever.

``dramatiq dramatiq_leak --processes 1 --threads 1``: the worker process
handles the messages; the main process only supervises.

Expected: leak=yes kind=reachable line=scenarios/workers/dramatiq_leak.py:23
Holder: dramatiq_leak.RESULTS
Leaking: dramatiq worker
Command: dramatiq dramatiq_leak --processes 1 --threads 1 --path scenarios/workers
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

dramatiq.set_broker(RedisBroker(url=os.environ.get("LEAKSCOPE_BROKER", "redis://127.0.0.1:6379/0")))
RESULTS: dict = {}


@dramatiq.actor(max_retries=0)
def handle(number: int) -> None:
    RESULTS[number] = {"number": number, "parts": [str(number)] * 10}
