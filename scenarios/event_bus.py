"""An event-bus singleton whose listener list gets a fresh lambda on every request.

The request handler subscribes "just for this request" and never unsubscribes;
the bus lives on the application class, three hops from the module.

Expected: leak=yes kind=reachable line=scenarios/event_bus.py:37
Holder: event_bus.App.events._listeners role=callback-list
"""

from __future__ import annotations

import itertools
from collections import defaultdict

_ids = itertools.count()


class EventBus:
    def __init__(self) -> None:
        self._listeners: list = []
        self._counts: dict[str, int] = defaultdict(int)

    def subscribe(self, listener) -> None:
        self._listeners.append(listener)

    def publish(self, event: str) -> None:
        self._counts[event] += 1
        for listener in self._listeners[-3:]:
            listener(event)


class App:
    events = EventBus()


def handle_request(request_id: int) -> None:
    App.events.subscribe(lambda event: (request_id, event))
    App.events.publish("request.handled")


def iteration() -> None:
    handle_request(next(_ids))
