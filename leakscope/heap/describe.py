"""What a growing container holds: its new items, where they were made, their noun."""

from __future__ import annotations

import functools
import gc
import tracemalloc
import types
from collections.abc import Callable
from typing import Any

from leakscope.heap.walk import (
    BOUNDED_LINES,
    BOUNDED_SAMPLE,
    CALLBACK_SHARE,
    DEQUE,
    IMMORTALISH,
    K_DEQUE,
    K_DICT,
    K_LIST,
    K_SET,
    PARTIAL,
    PLAIN,
    SAMPLE_ITEMS,
    SKIP_TYPES,
    instance_attributes,
)
from leakscope.model import sites
from leakscope.model.saferepr import safe_repr, type_name


class Container:
    """A growing container at the final checkpoint (held only while it is described)."""

    __slots__ = ("path", "obj", "kind", "length", "bound")

    def __init__(self, path: str, obj: Any, kind: str, length: int, bound: int | None) -> None:
        self.path = path
        self.obj = obj
        self.kind = kind
        self.length = length
        self.bound = bound


def _new_items(container: Container, grew_by: int) -> list[Any]:
    """A sample of the items added most recently (insertion order where there is one)."""
    obj = container.obj
    count = max(1, min(SAMPLE_ITEMS, grew_by))
    cls = type(obj)
    if issubclass(cls, dict):
        values = []
        for _, value in dict.items(obj).__reversed__():
            values.append(value)
            if len(values) >= count:
                break
        return values
    if issubclass(cls, list):
        return list.__getitem__(obj, slice(-count, None))
    if issubclass(cls, DEQUE):
        values = []
        for value in DEQUE.__reversed__(obj):
            values.append(value)
            if len(values) >= count:
                break
        return values
    if issubclass(cls, set):
        values = []
        for value in set.__iter__(obj):
            values.append(value)
            if len(values) >= count:
                break
        return values
    return []


def _defined_at(item: Any) -> str | None:
    """Where a callable item's code was written: ``file:line`` of its def or lambda."""
    cls = type(item)
    if cls is types.MethodType:
        item = item.__func__
        cls = type(item)
    if cls is PARTIAL:
        item = item.func
        cls = type(item)
    if cls is types.FunctionType:
        code = item.__code__
        return f"{code.co_filename}:{code.co_firstlineno}"
    return None


def _user_origin(obj: Any) -> str | None:
    traceback = tracemalloc.get_object_traceback(obj)
    if traceback is None:
        return None
    for frame in reversed(list(traceback)):  # iterated oldest first; innermost wins
        if sites.is_user_file(frame.filename):
            return f"{frame.filename}:{frame.lineno}"
    return None


def _made_at(item: Any) -> str | None:
    """The user line that allocated ``item``, from tracemalloc's record of it.

    CPython 3.11 cannot give the traceback of an instance whose class keeps
    its attributes inline; what its ``__init__`` allocated (a lock, a
    formatter) was made at the same user line, so those attributes answer.
    """
    if not tracemalloc.is_tracing():
        return None
    origin = _user_origin(item)
    if origin is not None or issubclass(type(item), PLAIN):
        return origin
    attributes = instance_attributes(item) or {}
    for value in list(attributes.values())[:8]:
        if not issubclass(type(value), IMMORTALISH):
            origin = _user_origin(value)
            if origin is not None:
                return origin
    return None


def _noun(item: Any) -> str:
    """What a person calls the item: closure, bound method, or its type's name."""
    cls = type(item)
    if cls is types.FunctionType:
        if item.__closure__:
            return "closure"
        return "lambda" if item.__code__.co_name == "<lambda>" else "function"
    if cls is types.MethodType:
        return "bound method"
    if cls is PARTIAL:
        return "partial"
    return type_name(item)


def describe_growth(container: Container, grew_by: int) -> dict[str, Any]:
    items = _new_items(container, grew_by)
    nouns: dict[str, int] = {}
    item_types: dict[str, int] = {}
    defined: dict[str, int] = {}
    made: dict[str, int] = {}
    callables = 0
    if items and all(issubclass(type(item), SKIP_TYPES) for item in items):
        return {"weak": True}
    for item in items:
        name = type_name(item)
        item_types[name] = item_types.get(name, 0) + 1
        noun = _noun(item)
        nouns[noun] = nouns.get(noun, 0) + 1
        if callable(item):
            callables += 1
        where = _defined_at(item)
        if where:
            defined[where] = defined.get(where, 0) + 1
        origin = _made_at(item)
        if origin:
            made[origin] = made.get(origin, 0) + 1
    role = "callback-list" if items and callables >= CALLBACK_SHARE * len(items) else "registry"
    by_count = lambda counts: sorted(counts, key=counts.__getitem__, reverse=True)[:3]  # noqa: E731
    keys = []
    if issubclass(type(container.obj), dict):
        for key in dict.keys(container.obj).__reversed__():
            keys.append(safe_repr(key))
            if len(keys) >= 3:
                break
    return {
        "role": role,
        "item_types": item_types,
        "callables_defined_at": by_count(defined),
        "items_made_at": by_count(made),
        "keys_sample": keys,
        "item_noun": by_count(nouns)[0] if nouns else "item",
    }


def bounded_entries(container: Container) -> list[Any]:
    """The newest entries of a bounded container: values and keys, or an lru_cache's
    keys, results and the C links it makes at each call.

    An lru_cache hides its entries from Python; ``gc.get_referents`` (the
    wrapper's C traverse, no user code) reads them, oldest first.
    """
    obj = container.obj
    if container.kind != "lru_cache":
        entries = _new_items(container, BOUNDED_SAMPLE)
        if issubclass(type(obj), dict):
            for key in dict.keys(obj).__reversed__():
                entries.append(key)
                if len(entries) >= 2 * BOUNDED_SAMPLE:
                    break
        return entries
    entries = []
    for ref in gc.get_referents(obj):
        cls = type(ref)
        if cls is dict:
            links = [x for x in gc.get_referents(ref) if type(x) is _LRU_LINK]
            entries.extend(links[-BOUNDED_SAMPLE:])
        elif not issubclass(cls, (type, types.FunctionType)) and cls is not object:
            entries.append(ref)
    return entries[-3 * BOUNDED_SAMPLE:]


def lines_made(entries: list[Any]) -> list[list[Any]]:
    """``[file, line, count]``: where tracemalloc saw each entry (and what it holds
    directly: a key tuple's strings, a result's fields) allocated, innermost frame."""
    if not tracemalloc.is_tracing():
        return []
    counts: dict[tuple[str, int], int] = {}
    seen: set[int] = set()

    def note(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        traceback = tracemalloc.get_object_traceback(obj)
        if traceback:
            frame = traceback[-1]  # oldest first: the last is where it was made
            key = (frame.filename, frame.lineno)
            counts[key] = counts.get(key, 0) + 1

    for entry in entries:
        note(entry)
        if issubclass(type(entry), (tuple, list)):
            for inner in gc.get_referents(entry)[:8]:
                if not issubclass(type(inner), IMMORTALISH) or type(inner) is str:
                    note(inner)
    ranked = sorted(counts, key=counts.__getitem__, reverse=True)[:BOUNDED_LINES]
    return [[filename, line, counts[(filename, line)]] for filename, line in ranked]


def _lru_link_type() -> type | None:
    """The C type of an lru_cache's per-entry link, read from a cache of our own."""
    probe = functools.lru_cache(maxsize=2)(lambda x: x)
    probe(1)
    for ref in gc.get_referents(probe):
        if type(ref) is dict:
            for value in ref.values():
                if type(value).__name__ == "_lru_list_elem":
                    return type(value)
    return None


_LRU_LINK = _lru_link_type()

LENGTHS: dict[int, Callable[[Any], int]] = {
    K_DICT: dict.__len__, K_LIST: list.__len__, K_DEQUE: DEQUE.__len__,
    K_SET: set.__len__,
}
