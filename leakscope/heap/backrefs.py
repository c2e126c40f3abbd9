"""The back-reference fallback through objgraph, for holders deeper than the walk."""

from __future__ import annotations

import sys
import tracemalloc
import types
from typing import Any

from leakscope.heap.describe import Container, describe_growth
from leakscope.heap.walk import (
    DEQUE,
    K_CLASS,
    K_DEQUE,
    K_DICT,
    K_FUNCTION,
    K_INSTANCE,
    K_LIST,
    K_MODULE,
    MODULE_DICT,
    SAMPLE_ITEMS,
    TYPE_DICT,
    classify,
    instance_attributes,
    length_of,
    root_name,
)
from leakscope.model.saferepr import safe_repr

# The back-reference fallback calls gc.get_referrers once per object it
# explores, each a pass over the whole heap; above this many objects it is
# skipped (and the run says so) to keep a run's cost bounded.
BACKREF_MAX_OBJECTS = 300_000

BACKREF_MAX_DEPTH = 16

_SAMPLE_SCAN = 200_000


def find_by_backrefs(lines: set[tuple[str, int]]) -> dict[str, Any] | None:
    """Name the container holding objects made at ``lines``, through objgraph.

    The fallback for holders deeper than the forward walk goes (or reachable
    only through paths it does not follow): find one live object allocated at
    the growing line (tracemalloc's record, newest generations first), ask
    objgraph for the shortest back-reference chain to a module, and name each
    link the way the forward walk would. It runs once, after the last loop
    and after the final collection (objgraph's search itself collects).
    The predicate is ours: objgraph's ``is_proper_module`` uses
    ``isinstance``, which can run a user class's ``__class__`` property.
    """
    import gc

    try:
        import objgraph
    except ImportError:
        # The worker's interpreter need not have it: leakscope's own
        # environment is never put on a measured process's path.
        return {"skipped": "objgraph is not importable by the worker's interpreter"}
    if len(gc.get_objects()) > BACKREF_MAX_OBJECTS:
        return {"skipped": f"heap above {BACKREF_MAX_OBJECTS:,} objects"}
    holder = _container_holding(lines)
    if holder is None:
        return None
    chain = objgraph.find_backref_chain(
        holder, lambda o: type(o) is types.ModuleType, max_depth=BACKREF_MAX_DEPTH,
        extra_ignore=(id(sys._getframe()),),
    )
    if len(chain) < 2 or type(chain[0]) is not types.ModuleType:
        return None
    names = [_module_name(chain[0])]
    namespace = False
    for parent, child in zip(chain, chain[1:]):
        name = _link_name(parent, child)
        if namespace and name.startswith("['") and name.endswith("']"):
            name = "." + name[2:-2]  # a key of a module's or an instance's __dict__
        namespace = name == "" and classify(type(child)) == K_DICT
        names.append(name)
    measured = length_of(holder)
    assert measured is not None  # _container_holding finds lists and dicts only
    kind, length, bound = measured
    path = "".join(names)
    container = Container(path, holder, kind, length, bound)
    return {"path": path, "type": kind, "bound": bound, "length": length,
            "made_while_traced": made_while_traced(holder),
            **describe_growth(container, SAMPLE_ITEMS)}


def made_while_traced(holder: Any) -> int:
    """How many of the holder's items were made since tracemalloc started.

    The search runs once, at the end, so it sees one length: this is its
    growth over the traced loops (an item tracemalloc has a record of was
    made while it traced). A dict's item counts when its key or its value
    was: a value taken from a free list has no record, a key made for it
    (a string, say) has. Builtin dicts and lists only, read through their
    own methods: no user code.
    """
    traced = tracemalloc.get_object_traceback
    if classify(type(holder)) == K_DICT:
        return sum(1 for key, value in list(dict.items(holder))
                   if traced(value) is not None or traced(key) is not None)
    return sum(1 for item in list.copy(holder) if traced(item) is not None)


def _container_holding(lines: set[tuple[str, int]]) -> Any:
    """The biggest builtin list or dict whose newest item was made at one of ``lines``.

    The newest item, not any item: the leaked objects of the last loops are
    the ones tracemalloc saw being made. Items that came from a free list
    have no traceback, so both a dict's last key and value are tried.
    """
    import gc

    best, best_length = None, 0
    for obj in gc.get_objects()[:_SAMPLE_SCAN]:
        kind = classify(type(obj))
        if kind == K_DICT:
            length = dict.__len__(obj)
            if length <= best_length:
                continue
            newest = next(dict.items(obj).__reversed__(), None)
            candidates: tuple[Any, ...] = newest or ()
        elif kind == K_LIST:
            length = list.__len__(obj)
            if length <= best_length:
                continue
            candidates = (list.__getitem__(obj, -1),) if length else ()
        else:
            continue
        for item in candidates:
            traceback = tracemalloc.get_object_traceback(item)
            if traceback is not None:
                innermost = list(traceback)[-1]
                if (innermost.filename, innermost.lineno) in lines:
                    best, best_length = obj, length
                    break
    return best


def _module_name(module: types.ModuleType) -> str:
    for name, candidate in list(sys.modules.items()):
        if candidate is module:
            return root_name(name, module)
    return "<module>"


def _link_name(parent: Any, child: Any) -> str:
    """How ``child`` is reached from ``parent``: ``.attr``, ``[key]``, ``[i]`` or ''."""
    kind = classify(type(parent))
    if kind == K_MODULE:
        namespace = MODULE_DICT.__get__(parent)
    elif kind == K_CLASS:
        namespace = TYPE_DICT.__get__(parent)
    elif kind == K_INSTANCE:
        namespace = instance_attributes(parent)
    elif kind == K_DICT:
        for key, value in list(dict.items(parent)):
            if value is child:
                return f"[{safe_repr(key)}]"
        return ""
    elif kind in (K_LIST, K_DEQUE):
        items = list.__iter__(parent) if kind == K_LIST else DEQUE.__iter__(parent)
        for index, value in enumerate(items):
            if value is child:
                return f"[{index}]"
        return ""
    elif kind == K_FUNCTION and parent.__closure__:
        for name, cell in zip(parent.__code__.co_freevars, parent.__closure__):
            if cell is child:
                return f".<locals>.{name}"
        return ""
    else:
        return ""  # an instance's __dict__, a cell: the next link names it
    for name, value in list(namespace.items()):
        if value is child:
            return f".{name}"
    return ""
