"""A Python leak under a C extension that allocates heavily and frees everything.

``leakext.churn`` mallocs and frees 4 KiB two hundred times per call: native
churn, nothing kept. The worker's own registry keeps one small dict per loop.
The leak is the Python line, kind reachable; the extension must not appear
as a growing native site.

Expected: leak=yes kind=reachable line=scenarios/native/ext_churn_pyleak.py:27
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build  # noqa: E402 - the build helper beside this file

leakext = build.load()
SEEN: list[dict[str, int]] = []


def iteration() -> None:
    leakext.churn(4096, 200)
    n = len(SEEN)
    # the leak: one record per loop, never removed
    SEEN.append({"n": n, "square": n * n})
