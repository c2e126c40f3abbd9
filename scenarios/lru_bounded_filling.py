"""``functools.lru_cache(maxsize=512)`` fed a unique argument per request: it is
still filling when a 50-loop run ends, but its bound is known, so leakscope
reports it as bounded (with its ceiling) instead of calling a leak.

Expected: leak=no kind=none line=-
Bounded: lru_bounded_filling.render_avatar bound=512
"""

from __future__ import annotations

import functools
import itertools

_ids = itertools.count()


@functools.lru_cache(maxsize=512)
def render_avatar(user_id: str) -> str:
    return f"<svg data-user='{user_id}'>" + "." * 64 + "</svg>"


def iteration() -> None:
    render_avatar(f"user-{next(_ids)}")
