"""The heap walk must call no user code: no repr, len, getattr, properties, eq or hash.

A class whose every hook records the call (and raises) is placed everywhere
the walk looks: module globals, class attributes, singleton attributes, dict
keys and values, list items, closure cells, slots. The probe runs through
checkpoints and the one-loop growth locator; the record stays empty.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tracemalloc
import types
from pathlib import Path

import pytest

from leakscope.heap.probe import HolderProbe
from leakscope.heap.walk import Walk

CALLS: list[str] = []
# A call made in a forked copy (the probe's walks and its mid-run description run
# there) lands in the copy's CALLS: it is written here too, for the test to read.
TEST_PID = os.getpid()
FORK_CALLS = Path(tempfile.gettempdir()) / f"leakscope-booby-calls-{TEST_PID}.log"


def _record(name: str) -> None:
    CALLS.append(name)
    if os.getpid() != TEST_PID:
        with open(FORK_CALLS, "a") as log:
            log.write(name + "\n")


def all_calls() -> list[str]:
    """Every hook called, in this process or in a forked copy of it."""
    forked = FORK_CALLS.read_text().split() if FORK_CALLS.exists() else []
    return CALLS + forked


class Booby:
    """Every hook a careless walker might call records itself and raises."""

    __slots__ = ("slot_value", "__dict__")

    def __init__(self, tag: str) -> None:
        object.__setattr__(self, "slot_value", [tag])
        self.__dict__["items"] = [tag]

    def _trip(self, name: str):
        _record(name)
        raise RuntimeError(f"user code called: {name}")

    def __repr__(self):
        return self._trip("__repr__")

    def __str__(self):
        return self._trip("__str__")

    def __len__(self):
        return self._trip("__len__")

    def __eq__(self, other):
        return self._trip("__eq__")

    def __hash__(self):
        return self._trip("__hash__")

    def __getattr__(self, name):
        return self._trip(f"__getattr__({name})")

    def __getattribute__(self, name):
        if name in ("_trip", "__dict__", "__class__"):
            return object.__getattribute__(self, name)
        return object.__getattribute__(self, "_trip")(f"__getattribute__({name})")

    def __sizeof__(self):
        return self._trip("__sizeof__")

    def __bool__(self):
        return self._trip("__bool__")

    def __iter__(self):
        return self._trip("__iter__")

    @property
    def prop(self):
        return self._trip("prop")


ARMED: list[bool] = []


class ArmedKey:
    """Hashable while the test builds its dicts; any later hash, eq or repr is a call."""

    def __hash__(self):
        if ARMED:
            _record("key.__hash__")
        return id(self)

    def __eq__(self, other):
        if ARMED:
            _record("key.__eq__")
        return self is other

    def __repr__(self):
        _record("key.__repr__")
        return "ArmedKey()"


class BoobyMeta(type):
    def __getattribute__(cls, name):
        if name.startswith("__") or name == "_trip":
            return type.__getattribute__(cls, name)
        _record(f"meta.__getattribute__({name})")
        raise RuntimeError("metaclass attribute hook called")

    def __repr__(cls):
        _record("meta.__repr__")
        raise RuntimeError("metaclass repr called")


class Registry(metaclass=BoobyMeta):
    handlers: list = []
    by_key: dict = {}
    booby_keys: dict = {}  # user objects as keys: walked, never hashed or compared


class BoobyDict(dict):
    def __len__(self):
        _record("dict-subclass.__len__")
        raise RuntimeError

    def items(self):
        _record("dict-subclass.items")
        raise RuntimeError


class BoobyList(list):
    def __len__(self):
        _record("list-subclass.__len__")
        raise RuntimeError

    def __iter__(self):
        _record("list-subclass.__iter__")
        raise RuntimeError


@pytest.fixture()
def booby_module():
    module = types.ModuleType("booby_worker")
    module.__file__ = __file__
    singleton = Booby("singleton")
    store = BoobyDict()
    seq = BoobyList()

    def make_closure():
        captured = [Booby("cell")]

        def inner():
            return captured

        return inner

    module.singleton = singleton
    module.store = store
    module.seq = seq
    module.Registry = Registry
    module.closure = make_closure()
    module.keyed = {}
    keys = type.__getattribute__(Registry, "booby_keys")
    keys.clear()
    for tag in ("a", "b"):
        keys[ArmedKey()] = Booby(tag)
    ARMED.append(True)
    sys.modules["booby_worker"] = module
    CALLS.clear()
    FORK_CALLS.unlink(missing_ok=True)

    handlers = type.__getattribute__(Registry, "handlers")
    by_key = type.__getattribute__(Registry, "by_key")

    def grow(n: int) -> None:
        for i in range(n):
            item = Booby(f"item-{i}-{len(module.keyed)}")
            handlers.append(item)
            dict.__setitem__(by_key, object(), item)  # a key with no repr of its own
            module.keyed[f"k{len(module.keyed)}"] = item
            list.append(seq, item)
            dict.__setitem__(store, f"s{dict.__len__(store)}", item)
            object.__getattribute__(singleton, "__dict__")["items"].append(item)

    try:
        yield grow
    finally:
        ARMED.clear()
        keys.clear()
        del sys.modules["booby_worker"]
        handlers.clear()
        by_key.clear()


def test_walk_calls_no_user_code(booby_module):
    booby_module(3)
    walk = Walk().run()
    paths = {walk.path(walk.node_of[key]) for key in walk.length_of}
    assert "booby_worker.Registry.handlers" in paths
    assert "booby_worker.singleton.items" in paths
    assert "booby_worker.closure.<locals>.captured" in paths
    assert "booby_worker.store" in paths and "booby_worker.seq" in paths
    assert any(p.startswith("booby_worker.Registry.booby_keys[<ArmedKey>]") for p in paths) or (
        "booby_worker.Registry.booby_keys" in paths
    )
    assert all_calls() == []


def test_probe_checkpoints_and_locator_call_no_user_code(booby_module):
    probe = HolderProbe()
    tracemalloc.start(5)
    try:
        for checkpoint in range(4):
            booby_module(2)
            probe.observe(final=checkpoint == 3)
        assert probe.start_locating(sys._getframe())
        booby_module(1)
        probe.stop_locating()
        report = probe.report()
    finally:
        tracemalloc.stop()
    assert all_calls() == []
    growing = report["growing"]
    assert "booby_worker.Registry.handlers" in growing
    assert "booby_worker.Registry.by_key" in growing
    assert growing["booby_worker.Registry.handlers"]["item_types"] == {"Booby": 6}
    # A key with no safe repr is named by its type, never by calling __repr__.
    assert growing["booby_worker.Registry.by_key"]["keys_sample"][0] == "<object>"
    assert growing["booby_worker.Registry.handlers"]["grown_at_stack"][0][0] == __file__


def test_declared_bounds_and_mid_run_description_call_no_user_code(booby_module):
    """A worker's mid-run description (``describe_now``) and an owner's ``maxlen``
    read the instance dict directly: still no user code."""
    bounded = Booby("bounded")
    object.__getattribute__(bounded, "__dict__")["maxlen"] = 50
    sys.modules["booby_worker"].bounded = bounded
    probe = HolderProbe()
    tracemalloc.start(5)
    try:
        for _ in range(3):
            booby_module(2)
            probe.observe()
        assert probe.describe_now()
        walk = Walk().run()
    finally:
        tracemalloc.stop()
    assert all_calls() == []
    items = object.__getattribute__(bounded, "__dict__")["items"]
    assert walk.bound(id(items)) == 50
    assert "booby_worker.Registry.handlers" in probe.growing_paths()


def test_mid_run_description_in_a_forked_copy_matches_one_made_here(booby_module, monkeypatch):
    """``describe_now`` walks and describes in a forked copy (the worker's heap keeps no
    trace of it) and finds the growers' live objects here by id: the same description,
    the same objects for the locator, as the walk in the worker made."""
    from leakscope.heap import probe as probe_module

    forked_results: list[object] = []
    real = probe_module.describe_in_fork

    def recorded(*args: object) -> object:
        result = real(*args)  # type: ignore[arg-type]
        forked_results.append(result)
        return result

    forked, here = HolderProbe(), HolderProbe()
    tracemalloc.start(5)
    try:
        for _ in range(3):
            booby_module(2)
            forked.observe()
            here.observe()
        monkeypatch.setattr(probe_module, "describe_in_fork", recorded)
        assert forked.describe_now()
        monkeypatch.setattr(probe_module, "describe_in_fork", lambda *args: None)
        assert here.describe_now()
    finally:
        tracemalloc.stop()
    assert all_calls() == []
    assert forked_results and forked_results[0] is not None  # the copy described
    assert forked.snapshot()["growing"] == here.snapshot()["growing"]
    assert "booby_worker.Registry.handlers" in forked.snapshot()["growing"]
    assert [id(c.obj) for c in forked._growing] == [id(c.obj) for c in here._growing]
