"""A plain consumer loop that calls ``leakscope.tick()`` per message and leaks a handler each time.

The heartbeat story from the seeds: every message re-registers a heartbeat
callback on the connection instead of once at start-up. Any Python program
can be traced this way: ``leakscope run -- python consumer_tick.py``.

Expected: leak=yes kind=reachable line=scenarios/workers/consumer_tick.py:24
Holder: consumer_tick.Connection.heartbeats
Leaking: consumer_tick.py
Command: python scenarios/workers/consumer_tick.py
"""

import itertools
import time

import leakscope


class Connection:
    heartbeats: list = []


def handle(message: dict) -> None:
    def beat(sent_at: float = time.time()) -> dict:
        return {"message": message, "sent_at": sent_at}

    Connection.heartbeats.append(beat)


def main() -> None:
    for number in itertools.count():
        handle({"id": number, "body": f"order {number}"})
        time.sleep(0.002)
        leakscope.tick()


if __name__ == "__main__":
    main()
