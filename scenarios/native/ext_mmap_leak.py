"""A C extension that leaks mapped memory: ``leakext.keep_mapped`` mmaps 32 KiB per call.

The block comes straight from ``mmap``, not from malloc, and every page is
written, so RSS rises by 32 KiB a loop while glibc's in-use bytes
(``mallinfo2()``) stay flat and tracemalloc sees nothing. Kind native, from
RSS. With memray as the locator, which hooks ``mmap`` too, the site is the
line below and the native function is ``leakext_map_block``.

Expected: leak=yes kind=native line=scenarios/native/ext_mmap_leak.py:26 native=leakext_map_block
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file

leakext = build.load()
SIZE = 32 * 1024


def iteration() -> None:
    # the leak: a 32 KiB mapping kept per call
    leakext.keep_mapped(SIZE)
