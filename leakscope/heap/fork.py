"""Walking in a forked copy: the worker goes on while a frozen copy of it is walked."""

from __future__ import annotations

import json
import os
import tracemalloc
import warnings

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
