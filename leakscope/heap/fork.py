"""Heap work in a forked copy of the process: walks, descriptions, the back-reference search.

What that work touches (reference counts, instance dicts it materialises, the
modules it imports, the garbage objgraph collects) changes the copy, never the
worker; the worker waits for the answer, so its pages are not copied meanwhile.
"""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings
from collections.abc import Callable
from typing import Any

from leakscope.heap.describe import Container, bounded_entries, describe_growth, lines_made
from leakscope.heap.walk import Walk
from leakscope.model import wire

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


def _in_fork(work: Callable[[], Any], stop_tracing: bool) -> Any:
    """``work()`` in a forked copy, its JSON-able result back through a pipe.

    None where fork is unavailable or fails, or the copy did not finish: the
    caller then does the work in-process. ``stop_tracing``: the copy stops
    tracemalloc first (see STOP_TRACING_BELOW) when the work does not read it.
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
            if stop_tracing and tracemalloc.is_tracing() and (
                tracemalloc.get_tracemalloc_memory() < STOP_TRACING_BELOW
            ):
                tracemalloc.stop()
            wire.write_all(write_fd, json.dumps(work()).encode())
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
    return json.loads(b"".join(chunks))


def walk_lengths_in_fork() -> tuple[dict[int, int], dict[int, tuple[str, str, int]], int] | None:
    """Run a Walk in a forked copy of the process: container lengths by ``id``.

    The copy stops tracemalloc before walking, so the walk runs at untraced
    speed (several times faster than under tracemalloc's allocation hook),
    and whatever it touches (reference counts, instance dicts it
    materialises) changes the copy, never the worker. Ids are addresses,
    identical in both processes. Returns None where fork is unavailable or
    fails; the caller then walks in-process.
    """
    def lengths() -> dict[str, Any]:
        walk = Walk().run()
        rows = [
            [key, [walk.path(walk.node_of[key]), walk.type_name(key), bound]]
            for key, bound in walk.bound_of.items()
        ]
        return {"lengths": list(walk.length_of.items()), "bounded": rows,
                "visited": walk.visited}

    payload = _in_fork(lengths, stop_tracing=True)
    if payload is None:
        return None
    lengths_by_id = {int(key): int(length) for key, length in payload["lengths"]}
    bounded = {
        int(key): (path, kind, int(bound)) for key, (path, kind, bound) in payload["bounded"]
    }
    return lengths_by_id, bounded, int(payload["visited"])


def describe_in_fork(
    growing: dict[int, tuple[int, int]], bounded: list[int],
) -> dict[str, Any] | None:
    """Walk and describe containers in a forked copy: what ``HolderProbe`` needs by ``id``.

    ``growing``: id -> (first length, last length) of each container that grew;
    ``bounded``: ids of bounded containers whose newest entries' lines are
    wanted. The copy keeps tracemalloc on (describing reads where items were
    made). A real worker's mid-run description walked in the worker itself
    left its mark there: the walk's tables spread over pymalloc arenas that
    the requests served meanwhile pinned (~1.2 MiB of RSS after an attach).
    """
    def describe() -> dict[str, Any]:
        walk = Walk().run()
        rows = []
        for key, (first, last) in growing.items():
            if key not in walk.objects:
                continue
            path, kind, bound = walk.path(walk.node_of[key]), walk.type_name(key), walk.bound(key)
            length = walk.length_of.get(key, last)
            container = Container(path, walk.objects[key], kind, length, bound)
            details = describe_growth(container, length - first)
            rows.append([key, path, kind, bound, length, details])
        made = []
        for key in bounded:
            if key in walk.objects:
                container = Container("", walk.objects[key], walk.type_name(key),
                                      walk.length_of.get(key, 0), walk.bound(key))
                made.append([key, lines_made(bounded_entries(container))])
        return {"growing": rows, "bounded": made}

    return _in_fork(describe, stop_tracing=False)


def backrefs_in_fork(lines: set[tuple[str, int]]) -> dict[str, Any] | None:
    """``find_by_backrefs`` in a forked copy of the process.

    The measured process loads only the standard library and leakscope's own
    modules: objgraph is imported in the copy, and its search's collection
    of garbage runs there. Ids, objects and tracemalloc's record are the
    same in the copy, which is all the search reads.
    """
    def search() -> dict[str, Any]:
        from leakscope.heap.backrefs import find_by_backrefs

        return {"found": find_by_backrefs(lines)}

    result = _in_fork(search, stop_tracing=False)
    if result is None:
        return {"skipped": "no forked copy of the worker to search in"}
    found: dict[str, Any] | None = result["found"]
    return found
