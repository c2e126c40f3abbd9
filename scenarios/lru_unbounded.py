"""``functools.lru_cache(maxsize=None)`` fed a unique argument per request: an
unbounded memo of every price quote ever asked for.

Expected: leak=yes kind=reachable line=scenarios/lru_unbounded.py:22
Holder: lru_unbounded.quote role=registry
"""

from __future__ import annotations

import functools
import itertools

_ids = itertools.count()


@functools.lru_cache(maxsize=None)  # noqa: UP033 - the case the issue names
def quote(order_id: str) -> tuple[str, float]:
    return (f"quote for {order_id}", 9.99)


def iteration() -> None:
    quote(f"order-{next(_ids)}")
