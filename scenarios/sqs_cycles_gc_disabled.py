"""A queue client whose every receive builds a reference cycle, under ``gc.disable()``.

Seed 000: Laravel's SQS worker grew per request until ``gc_collect_cycles()``
was called each loop. Nothing is reachable; the cycles wait for a collector
that never runs, so memory grows without bound. The cure is a collection per
loop (or gc left on), not a code fix.

Expected: leak=yes kind=cyclic-garbage line=scenarios/sqs_cycles_gc_disabled.py:34
"""

from __future__ import annotations

import gc
import itertools

_ids = itertools.count()


class Promise:
    def __init__(self, message: dict) -> None:
        self.message = message
        self.callbacks: list = []

    def then(self, callback) -> Promise:
        self.callbacks.append(callback)
        return self


class SqsClient:
    def receive_message(self) -> dict:
        message = {"MessageId": f"m-{next(_ids)}", "Body": "x" * 200}
        promise = Promise(message)
        # The closure refers to the promise that holds it: a cycle per receive.
        promise.then(lambda result: promise.message)
        return message


client = SqsClient()


def setup() -> None:
    gc.disable()


def iteration() -> None:
    client.receive_message()


def teardown() -> None:
    gc.enable()
