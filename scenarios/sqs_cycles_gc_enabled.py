"""A queue client whose every receive builds a reference cycle, with the collector on.

The same client as sqs_cycles_gc_disabled.py, but the normal collector runs:
the cycles are freed on its own schedule, memory saws up and down around a
constant, and that is no leak.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

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


def iteration() -> None:
    client.receive_message()
