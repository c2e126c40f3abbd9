"""A heartbeat sender that registers a callback per connection in a module-level list.

Seed 003: RabbitMQ consumers under Laravel's queue worker send heartbeats
from signal callbacks; here every new connection registers its heartbeat
callback and nobody unregisters it when the connection closes.

Expected: leak=yes kind=reachable line=scenarios/heartbeat_callbacks.py:38
Holder: heartbeat_callbacks.HEARTBEAT_CALLBACKS role=callback-list
"""

from __future__ import annotations

import itertools
import time

HEARTBEAT_CALLBACKS: list = []
_ids = itertools.count()


class Connection:
    def __init__(self, conn_id: int) -> None:
        self.conn_id = conn_id
        self.last_beat = 0.0

    def send_heartbeat(self) -> None:
        self.last_beat = time.monotonic()

    def open(self) -> None:
        # The leak: a bound method per connection, never unregistered, keeps
        # the closed connection alive too.
        HEARTBEAT_CALLBACKS.append(self.send_heartbeat)

    def close(self) -> None:
        pass  # forgets to remove its callback


def iteration() -> None:
    conn = Connection(next(_ids))
    conn.open()
    conn.close()
