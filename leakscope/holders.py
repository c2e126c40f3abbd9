"""Owner finder: the containers that keep growing, named by their path from a module.

At a few checkpoints the probe walks forward from every module in
``sys.modules``, through module globals, class attributes (static
registries), instance attributes of singletons, dict values, list items and
closure cells, up to ``MAX_DEPTH`` hops, and records the length of every
list, dict, set, deque and ``lru_cache`` it meets, keyed by a path a person
can read (``worker.Bus._listeners``). A container whose length rises at
every checkpoint is a holder; one with a known bound (a deque's ``maxlen``,
an ``lru_cache``'s ``maxsize``, the ``re`` module's cache) is reported as
bounded, with its ceiling, even while it is still filling.

Why a hand-written forward walk rather than objgraph or pympler: both count
only objects the garbage collector tracks, and a dict holding nothing but
strings and ints is untracked, so a registry keyed by request id is
invisible to them. Both also name objects by type, not by the path a person
reads in code. objgraph serves where it is strong, finding a back-reference
chain to a module, as a fallback when the forward walk finds no holder
(``find_by_backrefs``). pympler's summaries call ``sys.getsizeof``, which
runs a class's ``__sizeof__``, so item types are counted here by ``type()``
and pympler is not a dependency.

Safety: the walk calls no user code. It reads objects through
``gc.get_referents`` and the C-level slots of builtin types (``dict.__len__``
on a dict subclass, the ``__dict__`` getset descriptor found in the type's
own dictionary), never ``repr``, ``len``, ``getattr``, properties,
``__eq__`` or ``__hash__`` of a user object.
"""

from __future__ import annotations

import collections
import functools
import gc
import json
import os
import sys
import time
import tracemalloc
import types
import warnings
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from typing import Any

from leakscope import sites, wire
from leakscope.runfile import Holder
from leakscope.saferepr import qualified_type_name, safe_repr, type_name

# Hops from a module. ``app.events.Bus._instance._listeners`` is 3 hops;
# 5 leaves room for a dict of lists inside a singleton's attribute.
MAX_DEPTH = 5
# A checkpoint stops after this many objects, so a big heap costs a bounded walk.
MAX_NODES = 150_000
# Items of a container are walked only while it is this small; a bigger one is
# measured (its length) but not entered.
ENTER_LIMIT = 256
# New items sampled from a growing holder to name their types and origins.
SAMPLE_ITEMS = 64
# Lines that made a filling bounded container's entries: at most this many
# of its newest entries (and what each holds directly) are looked up.
BOUNDED_SAMPLE = 32
BOUNDED_LINES = 16
CALLBACK_SHARE = 0.5

_GETSET = types.GetSetDescriptorType
_MEMBER = types.MemberDescriptorType
_TYPE_DICT = vars(type)["__dict__"]
_TYPE_MRO = vars(type)["__mro__"]
_MODULE_DICT = vars(types.ModuleType)["__dict__"]
_LRU = type(functools.lru_cache(maxsize=None)(lambda: None))
_PARTIAL = functools.partial
_DEQUE = collections.deque
_SKIP_TYPES: tuple[type, ...] = ()
# Items whose own traceback is the whole story (no attributes to fall back on).
_PLAIN = (str, bytes, int, float, tuple, list, dict, set, frozenset, types.FunctionType,
          types.MethodType, types.BuiltinFunctionType, type)
# Values often shared or cached (interned names, small ints): their traceback is not the item's.
_IMMORTALISH = (str, int, float, bool, type(None), type, types.ModuleType, types.FunctionType)


def _weak_types() -> tuple[type, ...]:
    import weakref

    # Registries that do not own their items: they cannot keep anything alive.
    return (weakref.WeakSet, weakref.WeakValueDictionary, weakref.WeakKeyDictionary,
            weakref.ref, weakref.ProxyType, weakref.CallableProxyType)


_SKIP_TYPES = _weak_types()

# Containers whose bound the library fixes: module -> global name -> bound reader.
_KNOWN_BOUNDS: dict[str, dict[str, Callable[[dict], int | None]]] = {
    "re": {
        "_cache": lambda g: g.get("_MAXCACHE"),
        "_cache2": lambda g: g.get("_MAXCACHE2"),
    },
}


# What the walk does with an object, decided once per class per walk.
(_K_SKIP, _K_MODULE, _K_DICT, _K_LIST, _K_DEQUE, _K_SET, _K_LRU, _K_CLASS, _K_FUNCTION,
 _K_DESCRIPTOR, _K_INSTANCE) = range(11)
_CONTAINER_KINDS = (_K_DICT, _K_LIST, _K_DEQUE, _K_SET, _K_LRU)
# How a node is named from its parent: .attr, [key], [index], .<locals>.name
_L_ATTR, _L_KEY, _L_INDEX, _L_LOCAL = range(4)
_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, range, tuple, frozenset,
               types.BuiltinFunctionType, types.CodeType, types.FrameType, property,
               types.MethodType, _PARTIAL, type(None), memoryview, slice)


def _classify(cls: type) -> int:
    if issubclass(cls, types.ModuleType):
        return _K_MODULE
    if cls is _LRU:
        return _K_LRU
    if issubclass(cls, _SKIP_TYPES) or issubclass(cls, _LEAF_TYPES):
        return _K_SKIP
    if issubclass(cls, dict):
        return _K_DICT
    if issubclass(cls, list):
        return _K_LIST
    if issubclass(cls, _DEQUE):
        return _K_DEQUE
    if issubclass(cls, set):
        return _K_SET
    if issubclass(cls, type):
        return _K_CLASS
    if cls is types.FunctionType:
        return _K_FUNCTION
    if cls is staticmethod or cls is classmethod:
        return _K_DESCRIPTOR
    if issubclass(cls, (_MEMBER, _GETSET, types.WrapperDescriptorType,
                        types.MethodDescriptorType, types.ClassMethodDescriptorType)):
        return _K_SKIP
    if _is_own_module(_TYPE_DICT.__get__(cls).get("__module__")):
        # leakscope's own objects (`leakscope run` puts its import finder on
        # sys.meta_path): its bookkeeping is not the worker's.
        return _K_SKIP
    return _K_INSTANCE


def _length(obj: Any) -> tuple[str, int, int | None] | None:
    """(type name, length, bound) of a growable builtin container, read from C slots."""
    return _measure(obj, _classify(type(obj)))


def _measure(obj: Any, kind: int) -> tuple[str, int, int | None] | None:
    if kind == _K_LRU:
        info = obj.cache_info()  # a C method of the builtin wrapper
        return "lru_cache", info.currsize, info.maxsize
    if kind == _K_DICT:
        return qualified_type_name(type(obj)), dict.__len__(obj), None
    if kind == _K_LIST:
        return qualified_type_name(type(obj)), list.__len__(obj), None
    if kind == _K_DEQUE:
        maxlen = _DEQUE.__dict__["maxlen"].__get__(obj)
        return qualified_type_name(type(obj)), _DEQUE.__len__(obj), maxlen
    if kind == _K_SET:
        return qualified_type_name(type(obj)), set.__len__(obj), None
    return None


def _class_layout(cls: type) -> tuple[Any, list[tuple[str, Any]]]:
    """The ``__dict__`` getset (or None) and the ``__slots__`` members of a class.

    Looked up in the types' own dictionaries, so no ``__getattribute__``,
    property or metaclass of the user's runs.
    """
    members: list[tuple[str, Any]] = []
    dict_descriptor = None
    found_dict = False
    for base in _TYPE_MRO.__get__(cls):
        namespace = _TYPE_DICT.__get__(base)
        for name, descriptor in namespace.items():
            if type(descriptor) is _MEMBER:
                members.append((name, descriptor))
        if not found_dict and "__dict__" in namespace:
            found_dict = True
            descriptor = namespace["__dict__"]
            if type(descriptor) is _GETSET:
                dict_descriptor = descriptor
    return dict_descriptor, members


def _instance_attributes(obj: Any, layout: tuple[Any, list] | None = None) -> dict[str, Any]:
    """An instance's attributes without calling its class's code."""
    cls = type(obj)
    dict_descriptor, members = layout or _class_layout(cls)
    attributes: dict[str, Any] = {}
    for name, member in members:
        try:
            attributes[name] = member.__get__(obj, cls)
        except AttributeError:
            pass
    if dict_descriptor is not None:
        try:
            instance_dict = dict_descriptor.__get__(obj, cls)
        except (AttributeError, TypeError):
            instance_dict = None
        if type(instance_dict) is dict:
            attributes.update(instance_dict)
    return attributes


def _module_order(name: str, module: types.ModuleType) -> tuple[int, str]:
    """User modules first, so a class is named from where it is defined."""
    filename = _MODULE_DICT.__get__(module).get("__file__")
    user = isinstance(filename, str) and sites.is_user_file(filename)
    return (0 if name == "__main__" or user else 1, name)


def _is_own_module(name: object) -> bool:
    return type(name) is str and (name == "leakscope" or name.startswith("leakscope."))


def _dunder(name: object) -> bool:
    return type(name) is not str or (name.startswith("__") and name.endswith("__"))


class Walk:
    """One breadth-first pass from every module; containers found, keyed by ``id``.

    Nodes are kept as parallel lists (parent index, how it is named, the
    name), so a path string is built only for the few containers that turn
    out to grow: the walk allocates little, which matters because it runs
    while tracemalloc records every allocation.
    """

    def __init__(self, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
        self.max_depth = max_depth
        self.max_nodes = max_nodes
        self.parents: list[int] = []
        self.label_kinds: list[int] = []
        self.labels: list[Any] = []
        self.node_of: dict[int, int] = {}  # id(container) -> node
        self.length_of: dict[int, int] = {}
        self.bound_of: dict[int, int] = {}
        self.objects: dict[int, Any] = {}
        self.visited = 0

    def path(self, node: int) -> str:
        parts = []
        while node >= 0:
            kind, label = self.label_kinds[node], self.labels[node]
            if kind == _L_ATTR:
                parts.append(f".{label}" if self.parents[node] >= 0 else label)
            elif kind == _L_KEY:
                parts.append(f"[{safe_repr(label)}]")
            elif kind == _L_INDEX:
                parts.append(f"[{label}]")
            else:
                parts.append(f".<locals>.{label}")
            node = self.parents[node]
        return "".join(reversed(parts))

    def _node(self, parent: int, kind: int, label: Any) -> int:
        self.parents.append(parent)
        self.label_kinds.append(kind)
        self.labels.append(label)
        return len(self.parents) - 1

    def run(self) -> Walk:
        every = [
            (name, module) for name, module in list(sys.modules.items())
            if issubclass(type(module), types.ModuleType)
        ]
        main = sys.modules.get("__main__")
        spec = _MODULE_DICT.__get__(main).get("__spec__") if main is not None else None
        harness_is_main = type(spec) is ModuleSpec and _is_own_module(spec.name)
        roots = [
            (name, module) for name, module in every
            if not _is_own_module(name) and not (name == "__main__" and harness_is_main)
        ]
        roots.sort(key=lambda item: _module_order(*item))
        # Modules are roots, never entered from elsewhere; leakscope's own are skipped.
        self._seen = {id(module) for _, module in every}
        self._kinds: dict[type, int] = {}
        self._layouts: dict[type, tuple[Any, list]] = {}
        objects = [module for _, module in roots]
        nodes = [self._node(-1, _L_ATTR, _root_name(name, module)) for name, module in roots]
        depth = 0
        while objects and depth < self.max_depth and self.visited < self.max_nodes:
            self._next_objects: list[Any] = []
            self._next_nodes: list[int] = []
            self._deeper = depth + 1 < self.max_depth
            for obj, node in zip(objects, nodes):
                self.visited += 1
                if self.visited >= self.max_nodes:
                    break
                self._visit(obj, node)
            objects, nodes = self._next_objects, self._next_nodes
            depth += 1
        self._seen = set()
        self._kinds = {}
        self._layouts = {}
        self._next_objects = []
        return self

    def _kind(self, cls: type) -> int:
        kind = self._kinds.get(cls)
        if kind is None:
            kind = self._kinds[cls] = _classify(cls)
        return kind

    def _push(self, child: Any, label_kind: int, label: Any, parent: int) -> None:
        """Queue a child for the next level. Leaves are dropped before ``id()``
        is called: under tracemalloc every new int costs microseconds."""
        kind = self._kind(type(child))
        if kind == _K_SKIP or (kind == _K_FUNCTION and not child.__closure__):
            return
        key = id(child)
        if key in self._seen:
            return
        self._seen.add(key)
        node = self._node(parent, label_kind, label)
        if kind in _CONTAINER_KINDS:
            self._record(child, kind, node, key)
        if self._deeper:
            self._next_objects.append(child)
            self._next_nodes.append(node)

    def _declared_bound(self, instance_dict: dict) -> None:
        """An object that says ``self.maxlen = 1000`` bounds the containers it holds.

        Frameworks keep their bounded structures in small classes of their own
        (Celery's ``LimitedSet`` holds a dict and a heap under ``maxlen``); the
        attribute is read from the instance dict, never through the class.
        """
        bound = None
        for name in BOUND_ATTRIBUTES:
            value = instance_dict.get(name)
            if type(value) is int and value > 0:
                bound = value
                break
        if bound is None:
            return
        for value in instance_dict.values():
            key = id(value)
            if key in self.length_of and key not in self.bound_of:
                self.bound_of[key] = bound

    def _record(self, obj: Any, kind: int, node: int, key: int | None = None) -> None:
        """Note a container's length; its type name and bound only when needed."""
        key = id(obj) if key is None else key
        self.node_of[key] = node
        self.objects[key] = obj
        if kind == _K_LIST:
            self.length_of[key] = list.__len__(obj)
        elif kind == _K_DICT:
            self.length_of[key] = dict.__len__(obj)
        else:
            measured = _measure(obj, kind)
            if measured is None:
                return
            self.length_of[key] = measured[1]
            if measured[2] is not None:
                self.bound_of[key] = measured[2]

    def type_name(self, key: int) -> str:
        measured = _length(self.objects[key])
        return measured[0] if measured else "object"

    def bound(self, key: int) -> int | None:
        return self.bound_of.get(key)

    def _visit(self, obj: Any, node: int) -> None:
        """Push the children of one object, by how its class is walked."""
        cls = type(obj)
        kind = self._kind(cls)
        push = self._push
        try:
            if kind == _K_MODULE:
                namespace = _MODULE_DICT.__get__(obj)
                bounds = _KNOWN_BOUNDS.get(self.labels[node], {})
                for name, value in namespace.items():
                    if _dunder(name):
                        continue
                    bound = bounds.get(name) if bounds else None
                    if bound is not None and self._kind(type(value)) in _CONTAINER_KINDS:
                        child = self._node(node, _L_ATTR, name)
                        self._record(value, self._kind(type(value)), child)
                        limit = bound(namespace)
                        if limit is not None:
                            self.bound_of[id(value)] = limit
                        continue
                    push(value, _L_ATTR, name, node)
            elif kind in _CONTAINER_KINDS:
                if kind == _K_LRU or self.length_of.get(id(obj), 0) > ENTER_LIMIT:
                    return
                if kind == _K_DICT:
                    for key, value in dict.items(obj):
                        push(value, _L_KEY, key, node)
                elif kind == _K_LIST:
                    for index, value in enumerate(list.__iter__(obj)):
                        push(value, _L_INDEX, index, node)
                elif kind == _K_DEQUE:
                    for index, value in enumerate(_DEQUE.__iter__(obj)):
                        push(value, _L_INDEX, index, node)
                # set items have no name a person could use
            elif kind == _K_CLASS:
                for name, value in _TYPE_DICT.__get__(obj).items():
                    if not _dunder(name):
                        push(value, _L_ATTR, name, node)
            elif kind == _K_FUNCTION:
                for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
                    try:
                        push(cell.cell_contents, _L_LOCAL, name, node)
                    except ValueError:  # an empty cell
                        pass
            elif kind == _K_DESCRIPTOR:
                push(obj.__func__, _L_ATTR, "__func__", node)
            elif kind == _K_INSTANCE:
                layout = self._layouts.get(cls)
                if layout is None:
                    layout = self._layouts[cls] = _class_layout(cls)
                dict_descriptor, members = layout
                for name, member in members:
                    try:
                        push(member.__get__(obj, cls), _L_ATTR, name, node)
                    except AttributeError:
                        pass
                if dict_descriptor is not None:
                    instance_dict = dict_descriptor.__get__(obj, cls)
                    if type(instance_dict) is dict:
                        for name, value in instance_dict.items():
                            if type(name) is str:
                                push(value, _L_ATTR, name, node)
                        self._declared_bound(instance_dict)
        except (RuntimeError, AttributeError, TypeError):
            # Another thread changed the dict under us; its length is still
            # recorded, and the next checkpoint walks it again.
            pass


# Instance attributes by which a class declares the size its containers stop at.
BOUND_ATTRIBUTES = ("maxlen", "maxsize", "max_size", "max_entries", "capacity")


# The walking copy stops tracemalloc to walk at untraced speed, unless its
# traces are so many that freeing them (in a copy-on-write child) costs more
# than walking traced: about 0.7 s per 100 MB of tracemalloc's own memory,
# against a walk a few times slower.
STOP_TRACING_BELOW = 16 * 1024 * 1024


# True while this process forks a copy to walk: at-fork handlers (leakscope
# run's agent) read it to leave that short-lived copy alone.
walk_fork_in_progress = False


def fork_copy() -> int | None:
    """Fork a short-lived copy of this process for leakscope's own work.

    The pid in the parent, 0 in the copy, None where fork is unavailable or
    fails. At-fork handlers (``leakscope run``'s agent) see
    ``walk_fork_in_progress`` and leave the copy as it is: it keeps its
    parent's tracemalloc traces and events file, and ends with ``os._exit``.
    """
    global walk_fork_in_progress
    if not hasattr(os, "fork"):
        return None
    try:
        with warnings.catch_warnings():
            # 3.12+ warns when a threaded process forks; the copy only reads and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            walk_fork_in_progress = True
            try:
                return os.fork()
            finally:
                walk_fork_in_progress = False
    except OSError:
        return None


def walk_lengths_in_fork() -> tuple[dict[int, int], dict[int, tuple[str, str, int]], int] | None:
    """Run a Walk in a forked copy of the process: container lengths by ``id``.

    The copy stops tracemalloc before walking, so the walk runs at untraced
    speed (several times faster than under tracemalloc's allocation hook),
    and whatever it touches (reference counts, instance dicts it
    materialises) changes the copy, never the worker. Ids are addresses,
    identical in both processes. Returns None where fork is unavailable or
    fails; the caller then walks in-process.
    """
    read_fd, write_fd = os.pipe()
    pid = fork_copy()
    if pid is None:
        os.close(read_fd)
        os.close(write_fd)
        return None
    if pid == 0:  # the copy
        code = 1
        try:
            os.close(read_fd)
            if tracemalloc.is_tracing() and (
                tracemalloc.get_tracemalloc_memory() < STOP_TRACING_BELOW
            ):
                tracemalloc.stop()
            walk = Walk().run()
            rows = [
                [key, [walk.path(walk.node_of[key]), walk.type_name(key), bound]]
                for key, bound in walk.bound_of.items()
            ]
            data = json.dumps(
                {"lengths": list(walk.length_of.items()), "bounded": rows,
                 "visited": walk.visited}
            ).encode()
            wire.write_all(write_fd, data)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not chunks:
        return None
    payload = json.loads(b"".join(chunks))
    lengths = {int(key): int(length) for key, length in payload["lengths"]}
    bounded = {
        int(key): (path, kind, int(bound)) for key, (path, kind, bound) in payload["bounded"]
    }
    return lengths, bounded, int(payload["visited"])


class Container:
    """A growing container at the final checkpoint (held only while it is described)."""

    __slots__ = ("path", "obj", "kind", "length", "bound")

    def __init__(self, path: str, obj: Any, kind: str, length: int, bound: int | None) -> None:
        self.path = path
        self.obj = obj
        self.kind = kind
        self.length = length
        self.bound = bound


# ---------------------------------------------------------------- the probe


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
    if issubclass(cls, _DEQUE):
        values = []
        for value in _DEQUE.__reversed__(obj):
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
    if cls is _PARTIAL:
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
    if origin is not None or issubclass(type(item), _PLAIN):
        return origin
    attributes = _instance_attributes(item) or {}
    for value in list(attributes.values())[:8]:
        if not issubclass(type(value), _IMMORTALISH):
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
    if cls is _PARTIAL:
        return "partial"
    return type_name(item)


def _describe(container: Container, grew_by: int) -> dict[str, Any]:
    items = _new_items(container, grew_by)
    nouns: dict[str, int] = {}
    item_types: dict[str, int] = {}
    defined: dict[str, int] = {}
    made: dict[str, int] = {}
    callables = 0
    if items and all(issubclass(type(item), _SKIP_TYPES) for item in items):
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


def _bounded_entries(container: Container) -> list[Any]:
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


def _lines_made(entries: list[Any]) -> list[list[Any]]:
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
                if not issubclass(type(inner), _IMMORTALISH) or type(inner) is str:
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


_LENGTHS: dict[int, Callable[[Any], int]] = {
    _K_DICT: dict.__len__, _K_LIST: list.__len__, _K_DEQUE: _DEQUE.__len__,
    _K_SET: set.__len__,
}


class GrowthLocator:
    """For one loop, finds the user line that makes each growing holder longer.

    A line tracer checks the holders' lengths (C slots, O(1)) at every line
    event in the user's own files; when one changed, the user line that ran
    last did it, directly or through the library calls it made (an append
    inside ``logging.addHandler`` is charged to the user's ``addHandler``
    line; a value a user helper builds is charged to the caller's line that
    stores it, once the helper returns). Library frames get no line events,
    which keeps the one traced loop cheap. It runs for one extra loop after
    the measured ones, so its cost never reaches a measured figure.
    """

    def __init__(self, targets: list[Container]) -> None:
        self.targets: list[tuple[str, Any, Callable[[Any], int]]] = []
        for target in targets:
            length = _LENGTHS.get(_classify(type(target.obj)))
            if length is not None:
                self.targets.append((target.path, target.obj, length))
        self.lengths = [length(obj) for _, obj, length in self.targets]
        self.found: dict[str, list[list[Any]]] = {}
        self._last: tuple[types.FrameType, int] | None = None
        self._previous_trace: Callable[..., Any] | None = None
        self._patched: list[types.FrameType] = []
        self._user_files: dict[str, bool] = {}

    def _is_user(self, filename: str) -> bool:
        user = self._user_files.get(filename)
        if user is None:
            user = self._user_files[filename] = sites.is_user_file(filename)
        return user

    def _check(self) -> None:
        for i, (path, obj, length_of) in enumerate(self.targets):
            length = length_of(obj)
            if length != self.lengths[i]:
                if length > self.lengths[i] and path not in self.found and self._last:
                    self.found[path] = self._stack(*self._last)
                self.lengths[i] = length

    @staticmethod
    def _stack(frame: types.FrameType, line: int) -> list[list[Any]]:
        stack = [[frame.f_code.co_filename, line]]
        outer = frame.f_back
        while outer is not None and len(stack) < 12:
            stack.append([outer.f_code.co_filename, outer.f_lineno])
            outer = outer.f_back
        return stack

    def _local(self, frame: types.FrameType, event: str, arg: Any):
        self._check()
        if event == "line":
            self._last = (frame, frame.f_lineno)
        elif event == "return":
            # `CACHE[key] = build(key)`: the store runs after `build` returns,
            # with no new line event, so the line still running is the
            # caller's (the nearest user frame), not `build`'s last line.
            # With no user caller (a framework called the user's function),
            # what follows is the framework's, charged to the line that ran last.
            outer = frame.f_back
            while outer is not None and not self._is_user(outer.f_code.co_filename):
                outer = outer.f_back
            if outer is not None:
                self._last = (outer, outer.f_lineno)
        return self._local

    def _global(self, frame: types.FrameType, event: str, arg: Any):
        if not self._is_user(frame.f_code.co_filename):
            return None
        self._check()
        return self._local

    def start(self, caller: types.FrameType | None) -> None:
        self._previous_trace = sys.gettrace()
        sys.settrace(self._global)
        frame = caller
        while frame is not None:  # a tick script's loop is already running
            if self._is_user(frame.f_code.co_filename):
                frame.f_trace = self._local
                self._patched.append(frame)
            frame = frame.f_back

    def stop(self) -> dict[str, list[list[Any]]]:
        sys.settrace(self._previous_trace)
        for frame in self._patched:
            frame.f_trace = None
        self._patched.clear()
        self._check()
        self._last = None
        self.targets = []
        return self.found


class HolderProbe:
    """Walks the heap at each checkpoint and keeps only lengths between walks."""

    def __init__(self) -> None:
        self.series: dict[int, list[int]] = {}
        self.paths: dict[int, str] = {}
        self.kinds: dict[int, tuple[str, int | None]] = {}
        self.checkpoints = 0
        self.walk_seconds = 0.0
        self.visited = 0
        self.details: dict[int, dict[str, Any]] = {}
        self.grown_at: dict[str, list[list[Any]]] = {}
        self._locator: GrowthLocator | None = None
        self._growing: list[Container] = []
        self.backref: dict[str, Any] | None = None
        self.forked_walks = 0
        self._growing_cache: tuple[int, list[int]] | None = None

    def observe(self, final: bool = False) -> dict[str, Any]:
        """Record every container's length; at the final checkpoint, describe the growers.

        Checkpoints before the last walk in a forked copy of the process
        (``walk_lengths_in_fork``); the last walks here, because describing a
        holder needs the live objects and tracemalloc's record of them.
        """
        started = time.perf_counter()
        forked = None if final else walk_lengths_in_fork()
        walk = None
        if forked is not None:
            lengths, bounded, visited = forked
        else:
            walk = Walk().run()
            lengths, visited = walk.length_of, walk.visited
            bounded = {
                key: (walk.path(walk.node_of[key]), walk.type_name(key), bound)
                for key, bound in walk.bound_of.items()
            }
        self.visited = max(self.visited, visited)
        self.forked_walks += forked is not None
        index = self.checkpoints
        # Series are keyed by id: the same live container at every checkpoint.
        for key, length in lengths.items():
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = [-1] * index
            series.append(length)
        for series in self.series.values():
            if len(series) < index + 1:
                series.append(-1)
        for key, (path, kind, bound) in bounded.items():
            if key not in self.paths:
                self.paths[key] = path
                self.kinds[key] = (kind, bound)
        self.checkpoints += 1
        self._growing = []
        if final and walk is not None:
            self._describe_growing(walk)
        seconds = time.perf_counter() - started
        self.walk_seconds += seconds
        return {"containers": len(lengths), "visited": visited, "seconds": round(seconds, 4),
                "forked": forked is not None}

    def describe_now(self) -> bool:
        """Walk here and describe the containers that grew so far, adding no checkpoint.

        A real worker has no last loop to wait for: once the checkpoints show
        growth, it describes the growers mid-run and locates their line in the
        next unit. True when there was something to describe.
        """
        if not self._growing_keys():
            return False
        started = time.perf_counter()
        self._describe_growing(Walk().run())
        self.walk_seconds += time.perf_counter() - started
        return bool(self._growing)

    def _describe_growing(self, walk: Walk) -> None:
        self._growing = []
        for key in self._growing_keys():
            if key not in walk.objects:
                continue
            path = self.paths[key] = walk.path(walk.node_of[key])
            kind = walk.type_name(key)
            self.kinds[key] = (kind, walk.bound(key))
            series = self.series[key]
            length = walk.length_of.get(key, series[-1])
            container = Container(path, walk.objects[key], kind, length, walk.bound(key))
            self.details[key] = _describe(container, length - series[0])
            self._growing.append(container)
        for key, (kind, bound) in list(self.kinds.items()):
            if bound is None or key not in walk.objects:
                continue
            # A bound filling, or full and replacing its oldest entries (made
            # before tracing began) with new ones: either way its newest
            # entries' lines grow in the traced window. Name them, so that the
            # analysis can set that growth apart from a leak.
            container = Container(self.paths.get(key, ""), walk.objects[key], kind,
                                  walk.length_of.get(key, 0), bound)
            self.details.setdefault(key, {})["lines_made"] = _lines_made(
                _bounded_entries(container))

    def _growing_keys(self) -> list[int]:
        # Read several times per checkpoint over every container ever seen
        # (tens of thousands in a framework's worker): computed once each.
        if self._growing_cache is None or self._growing_cache[0] != self.checkpoints:
            self._growing_cache = (self.checkpoints, [
                key for key, series in self.series.items()
                if len(series) >= 3 and min(series) >= 0
                and all(b > a for a, b in zip(series, series[1:]))
            ])
        return self._growing_cache[1]

    def growing_paths(self) -> list[str]:
        """Paths whose length rose at every checkpoint, weak registries left out."""
        return [
            self.paths[key] for key in self._growing_keys()
            if key in self.paths and not self.details.get(key, {}).get("weak")
        ]

    def start_locating(self, caller: types.FrameType | None) -> bool:
        targets = [c for c in self._growing if c.kind != "lru_cache"]
        self._growing = []
        if not targets:
            return False
        self._locator = GrowthLocator(targets)
        self._locator.start(caller)
        return True

    def stop_locating(self) -> None:
        if self._locator is not None:
            self.grown_at = self._locator.stop()
            self._locator = None

    def report(self) -> dict[str, Any]:
        """What the parent needs to build Holder records."""
        self.stop_locating()
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The report so far, leaving a running locator alone (a worker's periodic save)."""
        growing = {}
        for key in self._growing_keys():
            if key not in self.paths or self.details.get(key, {}).get("weak"):
                continue
            path = self.paths[key]
            kind, bound = self.kinds[key]
            growing[path] = {
                "type": kind, "bound": bound, "series": self.series[key],
                **self.details.get(key, {}), "grown_at_stack": self.grown_at.get(path, []),
            }
        bounded = {}
        for key, (kind, bound) in self.kinds.items():
            series = [n for n in self.series.get(key, []) if n >= 0]
            if bound is not None and series and series[-1] > 0:
                bounded[self.paths[key]] = {
                    "type": kind, "bound": bound, "series": series,
                    "lines_made": self.details.get(key, {}).get("lines_made", []),
                }
        return {
            "growing": growing, "bounded": bounded, "checkpoints": self.checkpoints,
            "backref": self.backref,
            "walk_seconds": round(self.walk_seconds, 4), "max_visited": self.visited,
            "forked_walks": self.forked_walks,
        }


# ------------------------------------------------------------ parent side


def _user_line(stack: list[list[Any]], display: Callable[[str], str]) -> str | None:
    for filename, line in stack:
        if sites.is_user_file(filename):
            return f"{display(filename)}:{line}"
    return None


def _display_location(location: str, display: Callable[[str], str]) -> str:
    filename, _, line = location.rpartition(":")
    return f"{display(filename)}:{line}"


def _rank(path: str) -> tuple:
    """Prefer public names and short paths when several containers grow alike."""
    private = sum(part.startswith("_") for part in path.replace("[", ".").split("."))
    return (private, path.count(".") + path.count("["), path)


def build_holders(
    report: dict[str, Any] | None,
    measured_at_checkpoints: list[int],
    display: Callable[[str], str],
) -> tuple[list[Holder], list[dict[str, Any]]]:
    """Holder records from the probe's report; bounded containers apart."""
    if not report:
        return [], []
    loops = (measured_at_checkpoints[-1] - measured_at_checkpoints[0]) if len(
        measured_at_checkpoints) >= 2 else 0
    holders: list[Holder] = []
    bounded_out: list[dict[str, Any]] = []
    for path, info in report.get("bounded", {}).items():
        series = info["series"]
        current = series[-1]
        bound = info["bound"]
        filling = len(series) >= 2 and series[-1] > series[0] and current < bound
        bounded_out.append({
            "path": path, "type": info["type"], "bound": bound, "items": current,
            "filling": filling, "full": current >= bound, "items_series": series,
            "lines_made": [[display(f), n] for f, n, _ in info.get("lines_made", [])],
        })
    for path, info in report.get("growing", {}).items():
        if info.get("bound") is not None:
            continue  # known bound: reported under `bounded`, never as a leak
        series = info["series"]
        stack = info.get("grown_at_stack") or []
        holders.append(Holder(
            path=path,
            type="lru_cache" if info["type"] == "lru_cache" else info["type"],
            role=info.get("role", "registry"),
            items_first=series[0], items_last=series[-1],
            items_per_iteration=round((series[-1] - series[0]) / loops, 3) if loops else 0.0,
            item_types=info.get("item_types", {}),
            callables_defined_at=[
                _display_location(x, display) for x in info.get("callables_defined_at", [])
            ],
            grown_at=_user_line(stack, display),
            items_made_at=[_display_location(x, display) for x in info.get("items_made_at", [])],
            items_series=series,
            bound=None,
            growing=True,
            grown_at_stack=[[display(f), n] for f, n in stack],
            keys_sample=info.get("keys_sample", []),
            item_noun=info.get("item_noun", "item"),
        ))
    holders.sort(key=lambda h: (-h.items_per_iteration, _rank(h.path)))
    backref = report.get("backref") or {}
    if not holders and backref.get("path"):
        holders.append(Holder(
            path=backref["path"], type=backref["type"], role=backref.get("role", "registry"),
            items_first=backref["length"], items_last=backref["length"],
            items_per_iteration=0.0, item_types=backref.get("item_types", {}),
            callables_defined_at=[
                _display_location(x, display) for x in backref.get("callables_defined_at", [])
            ],
            items_made_at=[_display_location(x, display) for x in backref.get("items_made_at", [])],
            keys_sample=backref.get("keys_sample", []),
            item_noun=backref.get("item_noun", "item"), found_by="backrefs",
        ))
    return holders, bounded_out


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
        namespace = name == "" and _classify(type(child)) == _K_DICT
        names.append(name)
    measured = _length(holder)
    assert measured is not None  # _container_holding finds lists and dicts only
    kind, length, bound = measured
    path = "".join(names)
    container = Container(path, holder, kind, length, bound)
    return {"path": path, "type": kind, "bound": bound, "length": length,
            **_describe(container, SAMPLE_ITEMS)}


def _container_holding(lines: set[tuple[str, int]]) -> Any:
    """The biggest builtin list or dict whose newest item was made at one of ``lines``.

    The newest item, not any item: the leaked objects of the last loops are
    the ones tracemalloc saw being made. Items that came from a free list
    have no traceback, so both a dict's last key and value are tried.
    """
    import gc

    best, best_length = None, 0
    for obj in gc.get_objects()[:_SAMPLE_SCAN]:
        kind = _classify(type(obj))
        if kind == _K_DICT:
            length = dict.__len__(obj)
            if length <= best_length:
                continue
            newest = next(dict.items(obj).__reversed__(), None)
            candidates: tuple[Any, ...] = newest or ()
        elif kind == _K_LIST:
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


def _root_name(name: str, module: types.ModuleType) -> str:
    """A script run as ``__main__`` is named by its file, as a person finds it."""
    if name != "__main__":
        return name
    filename = _MODULE_DICT.__get__(module).get("__file__")
    if type(filename) is not str:
        # CPython drops __main__.__file__ once the script returns: a walk at
        # exit (atexit, the final checkpoint) finds it in sys.argv instead.
        filename = sys.argv[0] if sys.argv and type(sys.argv[0]) is str else ""
    if filename.endswith(".py"):
        return os.path.basename(filename)[:-3]
    return name


def _module_name(module: types.ModuleType) -> str:
    for name, candidate in list(sys.modules.items()):
        if candidate is module:
            return _root_name(name, module)
    return "<module>"


def _link_name(parent: Any, child: Any) -> str:
    """How ``child`` is reached from ``parent``: ``.attr``, ``[key]``, ``[i]`` or ''."""
    kind = _classify(type(parent))
    if kind == _K_MODULE:
        namespace = _MODULE_DICT.__get__(parent)
    elif kind == _K_CLASS:
        namespace = _TYPE_DICT.__get__(parent)
    elif kind == _K_INSTANCE:
        namespace = _instance_attributes(parent)
    elif kind == _K_DICT:
        for key, value in list(dict.items(parent)):
            if value is child:
                return f"[{safe_repr(key)}]"
        return ""
    elif kind in (_K_LIST, _K_DEQUE):
        items = list.__iter__(parent) if kind == _K_LIST else _DEQUE.__iter__(parent)
        for index, value in enumerate(items):
            if value is child:
                return f"[{index}]"
        return ""
    elif kind == _K_FUNCTION and parent.__closure__:
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
