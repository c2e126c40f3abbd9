"""A walk at the same point as the last one replaces it (HolderProbe.observe(again=True)).

Found in CI: a gunicorn worker that had served 30 measured requests exited right
after its walk at the 30th; the exit's final walk added a second, equal point,
so the growing dict no longer "rose at every checkpoint", no holder was named,
and a filling lru_cache beside it was taken for the whole growth ("No leak").
Reproduced through the real CLI in tests/workers/test_worker_scenarios.py.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from leakscope.drive.assemble import Assembler
from leakscope.heap.probe import HolderProbe
from leakscope.model.runfile import new_run


@pytest.fixture
def registry_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("probe_again_worker")
    module.REGISTRY = {}  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def grow(module: types.ModuleType, n: int) -> None:
    registry = module.REGISTRY  # type: ignore[attr-defined]
    for _ in range(n):
        registry[len(registry)] = {"n": len(registry)}


def test_a_final_walk_right_after_a_walk_keeps_the_container_growing(registry_module) -> None:
    probe = HolderProbe()
    for _ in range(3):
        grow(registry_module, 5)
        probe.observe()
    probe.observe(final=True, again=True)  # the worker exits: no unit since
    growing = probe.snapshot()["growing"]
    assert "probe_again_worker.REGISTRY" in growing
    assert growing["probe_again_worker.REGISTRY"]["series"][-3:] == [5, 10, 15]
    assert probe.checkpoints == 3


def test_an_equal_point_added_instead_would_hide_it(registry_module) -> None:
    """What the exit's walk did before: the test above checks against this."""
    probe = HolderProbe()
    for _ in range(3):
        grow(registry_module, 5)
        probe.observe()
    probe.observe(final=True)
    assert "probe_again_worker.REGISTRY" not in probe.snapshot()["growing"]


def test_the_parent_keeps_one_checkpoint_per_point() -> None:
    run = new_run("w.py", {})
    assembler = Assembler(run, 10, ".", None)
    assembler.add_checkpoint(30, {"containers": 1})
    assembler.add_checkpoint(30, {"containers": 2})
    assert [c["containers"] for c in assembler.checkpoints] == [2]
