"""A consumer script with its own ``while True`` loop that calls ``leakscope.tick()``
after each message, as Laravel's ``Queue::looping`` event fires per loop.

Every message's id is remembered in a module-level "seen" set for
de-duplication and never expired.

Expected: leak=yes kind=reachable line=scenarios/tick_consumer.py:23
Holder: tick_consumer.SEEN role=registry
"""

from __future__ import annotations

import itertools
import sys

import leakscope

SEEN: set[str] = set()


def main(queue: str) -> None:
    for n in itertools.count():
        message_id = f"{queue}-{n:08d}"
        if message_id not in SEEN:
            SEEN.add(message_id)  # the leak: ids are never expired
        leakscope.tick()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default")
