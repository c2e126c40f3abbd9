"""A class-level registry dict keyed by request id: every request registers its
context "for later lookups" and nothing ever unregisters it.

The dict holds only strings, so the garbage collector does not even track it:
objgraph and pympler cannot count it; leakscope's walk from the module finds it.

Expected: leak=yes kind=reachable line=scenarios/registry_dict.py:23
Holder: registry_dict.RequestContext.registry role=registry
"""

from __future__ import annotations

import itertools

_ids = itertools.count()


class RequestContext:
    registry: dict[str, str] = {}

    @classmethod
    def register(cls, request_id: str, user: str) -> None:
        cls.registry[request_id] = f"user={user};started=now"


def iteration() -> None:
    request_id = f"req-{next(_ids):06d}"
    RequestContext.register(request_id, "alice")
