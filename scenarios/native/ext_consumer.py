"""A consumer loop that calls ``leakscope.tick()`` per message and leaks C memory each time.

Each message goes through the test C extension (scenarios/native/leakext.c),
whose ``keep`` mallocs 1 KiB and never frees it: tracemalloc sees nothing,
malloc's in-use bytes grow. Under ``leakscope run`` the process is watched
with the counters, and once they grow its traced window runs under memray
too (where this Python can import it), which names the line below and the
native function that allocated.

Expected: leak=yes kind=native line=scenarios/native/ext_consumer.py:31 native=leakext_keep_buffer
Command: python scenarios/native/ext_consumer.py
"""

from __future__ import annotations

import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file
import leakscope  # noqa: E402

# Built on first use by the helper beside this file (cc and Python's headers).
leakext = build.load()
SIZE = 1024


def handle(message: dict) -> None:
    leakext.keep(SIZE)  # the leak: 1 KiB of C memory kept per message
    message.clear()


def main() -> None:
    for number in itertools.count():
        handle({"id": number})
        time.sleep(0.001)
        leakscope.tick()


if __name__ == "__main__":
    main()
