"""A session registry that is never pruned, in a worker that also parses a new URL
each request: `urllib.parse.urlsplit`'s lru_cache (bounded at 128) fills during the run.
The cache is no leak: the rate, the lines and the CI gate must be those of SESSIONS.

Expected: leak=yes kind=reachable line=scenarios/sessions_beside_url_cache.py:23
Holder: sessions_beside_url_cache.SESSIONS role=registry
"""

from __future__ import annotations

import itertools
import sys
from urllib.parse import urlsplit

SESSIONS: dict[int, list[str]] = {}
_ids = itertools.count()
PARSE = "plain" not in sys.argv[1:]  # `-- plain`: the same worker without the URL cache


def iteration() -> None:
    n = next(_ids)
    url = f"https://shop.example/orders/{n}?user=u{n}&page=2"
    SESSIONS[n] = [f"user-{n}", "cart", "basket", "checkout"]
    if PARSE:
        urlsplit(url)
