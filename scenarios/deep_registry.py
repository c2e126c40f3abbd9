"""A registry seven hops from its module, deeper than the forward walk goes:
``deep_registry.app.container.services['cache'].backend.store.entries``.

The forward walk stops at five hops; leakscope then follows references back
from a leaked object to a module (objgraph) and still names the dict.

Expected: leak=yes kind=reachable line=scenarios/deep_registry.py:48
Holder: deep_registry.app.container.services['cache'].backend.store.entries role=registry
"""

from __future__ import annotations

import itertools

_ids = itertools.count()


class Store:
    def __init__(self) -> None:
        self.entries: dict[str, dict] = {}


class Backend:
    def __init__(self) -> None:
        self.store = Store()


class Container:
    def __init__(self) -> None:
        self.services = {"cache": Service()}


class Service:
    def __init__(self) -> None:
        self.backend = Backend()


class App:
    def __init__(self) -> None:
        self.container = Container()


app = App()


def iteration() -> None:
    key = f"session-{next(_ids)}"
    app.container.services["cache"].backend.store.entries[key] = {"user": key, "hits": [1]}
