"""The forward walk: every container reachable from ``sys.modules``, named by its path.

Safety: the walk calls no user code. It reads objects through
``gc.get_referents`` and the C-level slots of builtin types (``dict.__len__``
on a dict subclass, the ``__dict__`` getset descriptor found in the type's
own dictionary), never ``repr``, ``len``, ``getattr``, properties,
``__eq__`` or ``__hash__`` of a user object.
"""

from __future__ import annotations

import collections
import functools
import os
import sys
import types
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from typing import Any

from leakscope.model import sites
from leakscope.model.saferepr import qualified_type_name, safe_repr

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

TYPE_DICT = vars(type)["__dict__"]

_TYPE_MRO = vars(type)["__mro__"]

MODULE_DICT = vars(types.ModuleType)["__dict__"]

_LRU = type(functools.lru_cache(maxsize=None)(lambda: None))

PARTIAL = functools.partial

DEQUE = collections.deque
SKIP_TYPES: tuple[type, ...] = ()

# Items whose own traceback is the whole story (no attributes to fall back on).
PLAIN = (str, bytes, int, float, tuple, list, dict, set, frozenset, types.FunctionType,
          types.MethodType, types.BuiltinFunctionType, type)


# Values often shared or cached (interned names, small ints): their traceback is not the item's.
IMMORTALISH = (str, int, float, bool, type(None), type, types.ModuleType, types.FunctionType)


def _weak_types() -> tuple[type, ...]:
    import weakref

    # Registries that do not own their items: they cannot keep anything alive.
    return (weakref.WeakSet, weakref.WeakValueDictionary, weakref.WeakKeyDictionary,
            weakref.ref, weakref.ProxyType, weakref.CallableProxyType)


SKIP_TYPES = _weak_types()

# Containers whose bound the library fixes: module -> global name -> bound reader.
_KNOWN_BOUNDS: dict[str, dict[str, Callable[[dict], int | None]]] = {
    "re": {
        "_cache": lambda g: g.get("_MAXCACHE"),
        "_cache2": lambda g: g.get("_MAXCACHE2"),
    },
}

# What the walk does with an object, decided once per class per walk.
(K_SKIP, K_MODULE, K_DICT, K_LIST, K_DEQUE, K_SET, K_LRU, K_CLASS, K_FUNCTION,
 K_DESCRIPTOR, K_INSTANCE) = range(11)


_CONTAINER_KINDS = (K_DICT, K_LIST, K_DEQUE, K_SET, K_LRU)

# How a node is named from its parent: .attr, [key], [index], .<locals>.name
L_ATTR, L_KEY, L_INDEX, L_LOCAL = range(4)

_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, range, tuple, frozenset,
               types.BuiltinFunctionType, types.CodeType, types.FrameType, property,
               types.MethodType, PARTIAL, type(None), memoryview, slice)


def classify(cls: type) -> int:
    if issubclass(cls, types.ModuleType):
        return K_MODULE
    if cls is _LRU:
        return K_LRU
    if issubclass(cls, SKIP_TYPES) or issubclass(cls, _LEAF_TYPES):
        return K_SKIP
    if issubclass(cls, dict):
        return K_DICT
    if issubclass(cls, list):
        return K_LIST
    if issubclass(cls, DEQUE):
        return K_DEQUE
    if issubclass(cls, set):
        return K_SET
    if issubclass(cls, type):
        return K_CLASS
    if cls is types.FunctionType:
        return K_FUNCTION
    if cls is staticmethod or cls is classmethod:
        return K_DESCRIPTOR
    if issubclass(cls, (_MEMBER, _GETSET, types.WrapperDescriptorType,
                        types.MethodDescriptorType, types.ClassMethodDescriptorType)):
        return K_SKIP
    if _is_own_module(TYPE_DICT.__get__(cls).get("__module__")):
        # leakscope's own objects (`leakscope run` puts its import finder on
        # sys.meta_path): its bookkeeping is not the worker's.
        return K_SKIP
    return K_INSTANCE


def length_of(obj: Any) -> tuple[str, int, int | None] | None:
    """(type name, length, bound) of a growable builtin container, read from C slots."""
    return _measure(obj, classify(type(obj)))


def _measure(obj: Any, kind: int) -> tuple[str, int, int | None] | None:
    if kind == K_LRU:
        info = obj.cache_info()  # a C method of the builtin wrapper
        return "lru_cache", info.currsize, info.maxsize
    if kind == K_DICT:
        return qualified_type_name(type(obj)), dict.__len__(obj), None
    if kind == K_LIST:
        return qualified_type_name(type(obj)), list.__len__(obj), None
    if kind == K_DEQUE:
        maxlen = DEQUE.__dict__["maxlen"].__get__(obj)
        return qualified_type_name(type(obj)), DEQUE.__len__(obj), maxlen
    if kind == K_SET:
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
        namespace = TYPE_DICT.__get__(base)
        for name, descriptor in namespace.items():
            if type(descriptor) is _MEMBER:
                members.append((name, descriptor))
        if not found_dict and "__dict__" in namespace:
            found_dict = True
            descriptor = namespace["__dict__"]
            if type(descriptor) is _GETSET:
                dict_descriptor = descriptor
    return dict_descriptor, members


def instance_attributes(obj: Any, layout: tuple[Any, list] | None = None) -> dict[str, Any]:
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
    filename = MODULE_DICT.__get__(module).get("__file__")
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
        self.node_ids: list[int] = []  # node -> id of its object
        self.node_of: dict[int, int] = {}  # id(container) -> node
        self.length_of: dict[int, int] = {}
        self.bound_of: dict[int, int] = {}
        self.objects: dict[int, Any] = {}
        self.visited = 0

    def path(self, node: int) -> str:
        parts = []
        while node >= 0:
            kind, label = self.label_kinds[node], self.labels[node]
            if kind == L_ATTR:
                parts.append(f".{label}" if self.parents[node] >= 0 else label)
            elif kind == L_KEY:
                parts.append(f"[{safe_repr(label)}]")
            elif kind == L_INDEX:
                parts.append(f"[{label}]")
            else:
                parts.append(f".<locals>.{label}")
            node = self.parents[node]
        return "".join(reversed(parts))

    def _node(self, parent: int, kind: int, label: Any, key: int) -> int:
        self.parents.append(parent)
        self.label_kinds.append(kind)
        self.labels.append(label)
        self.node_ids.append(key)
        return len(self.parents) - 1

    def chain(self, key: int) -> list[int]:
        """The ids of the objects from a module down to the container ``key``: how
        ``heap.resolve.find_by_chain`` finds it again in the worker."""
        node = self.node_of[key]
        ids = []
        while node >= 0:
            ids.append(self.node_ids[node])
            node = self.parents[node]
        ids.reverse()
        return ids

    def run(self) -> Walk:
        every = [
            (name, module) for name, module in list(sys.modules.items())
            if issubclass(type(module), types.ModuleType)
        ]
        main = sys.modules.get("__main__")
        spec = MODULE_DICT.__get__(main).get("__spec__") if main is not None else None
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
        nodes = [self._node(-1, L_ATTR, root_name(name, module), id(module))
                 for name, module in roots]
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
            kind = self._kinds[cls] = classify(cls)
        return kind

    def _push(self, child: Any, label_kind: int, label: Any, parent: int) -> None:
        """Queue a child for the next level. Leaves are dropped before ``id()``
        is called: under tracemalloc every new int costs microseconds."""
        kind = self._kind(type(child))
        if kind == K_SKIP or (kind == K_FUNCTION and not child.__closure__):
            return
        key = id(child)
        if key in self._seen:
            return
        self._seen.add(key)
        node = self._node(parent, label_kind, label, key)
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
        if kind == K_LIST:
            self.length_of[key] = list.__len__(obj)
        elif kind == K_DICT:
            self.length_of[key] = dict.__len__(obj)
        else:
            measured = _measure(obj, kind)
            if measured is None:
                return
            self.length_of[key] = measured[1]
            if measured[2] is not None:
                self.bound_of[key] = measured[2]

    def type_name(self, key: int) -> str:
        measured = length_of(self.objects[key])
        return measured[0] if measured else "object"

    def bound(self, key: int) -> int | None:
        return self.bound_of.get(key)

    def _visit(self, obj: Any, node: int) -> None:
        """Push the children of one object, by how its class is walked."""
        cls = type(obj)
        kind = self._kind(cls)
        push = self._push
        try:
            if kind == K_MODULE:
                namespace = MODULE_DICT.__get__(obj)
                bounds = _KNOWN_BOUNDS.get(self.labels[node], {})
                for name, value in namespace.items():
                    if _dunder(name):
                        continue
                    bound = bounds.get(name) if bounds else None
                    if bound is not None and self._kind(type(value)) in _CONTAINER_KINDS:
                        child = self._node(node, L_ATTR, name, id(value))
                        self._record(value, self._kind(type(value)), child)
                        limit = bound(namespace)
                        if limit is not None:
                            self.bound_of[id(value)] = limit
                        continue
                    push(value, L_ATTR, name, node)
            elif kind in _CONTAINER_KINDS:
                if kind == K_LRU or self.length_of.get(id(obj), 0) > ENTER_LIMIT:
                    return
                if kind == K_DICT:
                    for key, value in dict.items(obj):
                        push(value, L_KEY, key, node)
                elif kind == K_LIST:
                    for index, value in enumerate(list.__iter__(obj)):
                        push(value, L_INDEX, index, node)
                elif kind == K_DEQUE:
                    for index, value in enumerate(DEQUE.__iter__(obj)):
                        push(value, L_INDEX, index, node)
                # set items have no name a person could use
            elif kind == K_CLASS:
                for name, value in TYPE_DICT.__get__(obj).items():
                    if not _dunder(name):
                        push(value, L_ATTR, name, node)
            elif kind == K_FUNCTION:
                for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or ()):
                    try:
                        push(cell.cell_contents, L_LOCAL, name, node)
                    except ValueError:  # an empty cell
                        pass
            elif kind == K_DESCRIPTOR:
                push(obj.__func__, L_ATTR, "__func__", node)
            elif kind == K_INSTANCE:
                layout = self._layouts.get(cls)
                if layout is None:
                    layout = self._layouts[cls] = _class_layout(cls)
                dict_descriptor, members = layout
                for name, member in members:
                    try:
                        push(member.__get__(obj, cls), L_ATTR, name, node)
                    except AttributeError:
                        pass
                if dict_descriptor is not None:
                    instance_dict = dict_descriptor.__get__(obj, cls)
                    if type(instance_dict) is dict:
                        for name, value in instance_dict.items():
                            if type(name) is str:
                                push(value, L_ATTR, name, node)
                        self._declared_bound(instance_dict)
        except (RuntimeError, AttributeError, TypeError):
            # Another thread changed the dict under us; its length is still
            # recorded, and the next checkpoint walks it again.
            pass


# Instance attributes by which a class declares the size its containers stop at.
BOUND_ATTRIBUTES = ("maxlen", "maxsize", "max_size", "max_entries", "capacity")


def root_name(name: str, module: types.ModuleType) -> str:
    """A script run as ``__main__`` is named by its file, as a person finds it."""
    if name != "__main__":
        return name
    filename = MODULE_DICT.__get__(module).get("__file__")
    if type(filename) is not str:
        # CPython drops __main__.__file__ once the script returns: a walk at
        # exit (atexit, the final checkpoint) finds it in sys.argv instead.
        filename = sys.argv[0] if sys.argv and type(sys.argv[0]) is str else ""
    if filename.endswith(".py"):
        return os.path.basename(filename)[:-3]
    return name
