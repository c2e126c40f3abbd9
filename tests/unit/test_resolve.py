"""Containers found again by the chain of ids a walk reached them by (heap.resolve).

A Celery pool child's window copy called ``describe_known`` to name the lines its
bounded containers' entries were made at, and looked for them among
``gc.get_objects()``: ``celery.worker.request.revoked_tasks._data``, a dict of
task ids and times, is not tracked by the gc, so it was never found and the copy
walked the whole heap under tracemalloc instead (0.9 s of CPU beside the workers).
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Iterator

import pytest

from leakscope.heap.probe import HolderProbe
from leakscope.heap.resolve import find_by_chain
from leakscope.heap.walk import Walk


class Limited:
    """Like Celery's LimitedSet: a bound declared by an attribute, atoms in a dict."""

    def __init__(self) -> None:
        self.maxlen = 1000
        self._data: dict[str, float] = {}


class Slotted:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[int] = [1]


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    mod = types.ModuleType("resolve_worker")
    mod.LIMITED = Limited()  # type: ignore[attr-defined]

    def make() -> object:
        registry: list[object] = [[1]]

        def handler() -> object:
            return registry
        return handler

    class Config:
        CACHE = {"a": [1, 2]}  # noqa: RUF012

    mod.handler = make()  # type: ignore[attr-defined]
    mod.Config = Config  # type: ignore[attr-defined]
    mod.SLOTTED = Slotted()  # type: ignore[attr-defined]
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_every_way_a_walk_goes_down_is_found_again(module) -> None:
    data = module.LIMITED._data
    data["task-1"] = 1.5
    assert not gc.is_tracked(data)  # the case a scan of the gc's objects misses
    targets = [data, module.handler.__closure__[0].cell_contents, module.Config.CACHE,
               module.Config.CACHE["a"], module.SLOTTED.items]
    walk = Walk().run()
    for target in targets:
        assert find_by_chain(walk.chain(id(target))) is target


def test_a_step_replaced_since_the_walk_is_not_found(module) -> None:
    walk = Walk().run()
    chain = walk.chain(id(module.Config.CACHE["a"]))
    module.Config.CACHE = {"a": [3]}
    assert find_by_chain(chain) is None
    assert find_by_chain([]) is None


def test_bounded_containers_the_gc_does_not_track_are_described_without_a_walk(module) -> None:
    probe = HolderProbe()
    module.LIMITED._data.update({f"task-{n}": float(n) for n in range(3)})
    for _ in range(3):
        probe.observe()  # walks in a forked copy, which sends the chains
    path = "resolve_worker.LIMITED._data"
    assert path in probe.paths.values()
    assert probe.describe_known()
    key = next(key for key, value in probe.paths.items() if value == path)
    assert "lines_made" in probe.details[key]
