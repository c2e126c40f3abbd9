"""The holder search: the containers that keep growing, named by their path from a module.

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

Modules: ``walk`` (the forward walk), ``fork`` (walking a forked copy),
``describe`` (what a container's new items are), ``locate`` (the line that grows it),
``probe`` (what the collectors call), ``report`` (parent side), ``backrefs`` (objgraph,
in a forked copy: the worker never imports it).
"""
