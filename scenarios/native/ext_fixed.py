"""The same C extension, fixed: ``leakext.borrow`` mallocs 1 KiB per call and frees it.

Expected: leak=no kind=none line=-
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file

leakext = build.load()
SIZE = 1024


def iteration() -> None:
    leakext.borrow(SIZE)
