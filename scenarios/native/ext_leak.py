"""A C extension that leaks: ``leakext.keep`` mallocs 1 KiB per call and never frees it.

tracemalloc sees nothing (the memory is outside Python's allocators); malloc's
in-use bytes grow. Kind native. With memray as the locator, the site is the
line below that calls the extension, and the native function that allocated
is ``leakext_keep_buffer`` in the extension's library.

Expected: leak=yes kind=native line=scenarios/native/ext_leak.py:25 native=leakext_keep_buffer
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file

leakext = build.load()
SIZE = 1024


def iteration() -> None:
    # the leak: 1 KiB of C memory kept per call
    leakext.keep(SIZE)
