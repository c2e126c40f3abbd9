"""Heap work in a forked copy of the process: walks, descriptions, the back-reference search.

What that work touches (reference counts, instance dicts it materialises, the
modules it imports, the garbage objgraph collects) changes the copy, never the
worker. A real worker's checkpoint walks do not wait for their copy
(``start_lengths_in_fork``): while the copy walks (0.1-0.3 s in a framework's
worker) the pages either process writes are copied, at most one copy of the
heap, as when the worker waited (the walk itself writes the reference count of
nearly every object, so the copy's pages were copied then too).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import tracemalloc
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from leakscope.heap.describe import Container, bounded_entries, describe_growth, lines_made
from leakscope.heap.lengths import LengthTable
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


@dataclass
class Packed:
    """A copy's answer as a small JSON header and binary blobs (arrays' bytes): read
    in the worker without an object per item, each allocation traced there."""

    header: dict[str, Any]
    blobs: list[bytes | memoryview] = field(default_factory=list)


def encode_answer(result: Any) -> bytes:
    """A copy's answer on the pipe: an 8-byte header length, the JSON header, the blobs."""
    packed = isinstance(result, Packed)
    head = json.dumps({
        "packed": packed, "result": result.header if packed else result,
        "blobs": [len(blob) for blob in result.blobs] if packed else [],
    }).encode()
    blobs = b"".join(result.blobs) if packed else b""
    return len(head).to_bytes(8, "little") + head + blobs


def decode_answer(payload: bytes) -> Any:
    """What ``encode_answer`` wrote: the JSON value, or a Packed whose blobs are views
    into ``payload``. ValueError if it is cut short."""
    size = int.from_bytes(payload[:8], "little")
    if len(payload) < 8 + size:
        raise ValueError("answer cut short")
    head = json.loads(payload[8:8 + size])
    if not head["packed"]:
        return head["result"]
    view, offset = memoryview(payload), 8 + size
    blobs: list[bytes | memoryview] = []
    for length in head["blobs"]:
        if offset + length > len(payload):
            raise ValueError("answer cut short")
        blobs.append(view[offset:offset + length])
        offset += length
    return Packed(head["result"], blobs)


def fork_copy() -> int | None:
    """Fork a short-lived copy of this process for leakscope's own work.

    The pid in the parent, 0 in the copy, None where fork is unavailable or
    fails. The worker's own at-fork handlers (``os.register_at_fork``'s
    ``before`` and ``after_in_parent``: a library that stops its background
    thread before a fork and starts a new one after) do not run: see
    ``_fork_without_handlers``. Handlers for the child run in the copy, as
    after any fork (the interpreter's own locks need them), and an audit
    hook sees an ``os.fork`` event; ``leakscope run``'s agent sees
    ``walk_fork_in_progress`` there and leaves the copy as it is: it keeps
    its parent's tracemalloc traces and events file, and ends with ``os._exit``.
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
                return _fork_without_handlers()
            finally:
                walk_fork_in_progress = False
    except OSError:
        return None


def _fork_without_handlers() -> int:
    """``os.fork()`` with the worker's ``before`` and ``after_in_parent`` handlers set aside.

    CPython keeps each kind of at-fork handler in a list it owns; the two
    run in this process are emptied around the fork and refilled after it,
    in both processes. The child is made by ``os.fork`` itself, whose reset
    of the GIL, thread states and locks runs in C before any bytecode: a fork
    by ctypes, with that reset called after, left copies waiting forever on
    a GIL another thread had asked for (11-44 forks in 100, under three busy
    threads). OSError if the fork fails.
    """
    lists = _parent_side_handlers()
    saved = [handlers[:] for handlers in lists]
    for handlers in lists:
        handlers.clear()
    try:
        return os.fork()
    finally:
        for handlers, before in zip(lists, saved, strict=True):
            handlers[:0] = before  # ahead of any registered meanwhile


@functools.cache
def _parent_side_handlers() -> tuple[list[Any], ...]:
    """CPython's lists of ``before`` and ``after_in_parent`` at-fork handlers.

    Found once, as the lists that hold a marker registered for the purpose
    (the marker is then taken out again): ``gc.get_referrers`` reads the
    heap's references and calls no user code. Empty where they cannot be told.
    """
    found = []
    for slot in ("before", "after_in_parent"):
        def marker() -> None:
            return None

        os.register_at_fork(**{slot: marker})
        holders = [ref for ref in gc.get_referrers(marker) if type(ref) is list]
        for handlers in holders:
            handlers[:] = [handler for handler in handlers if handler is not marker]
        if len(holders) != 1:
            return ()
        found.append(holders[0])
    return tuple(found)


class ForkJob:
    """``work()`` running in a forked copy; its result (JSON-able, or Packed) comes back
    through a pipe.

    The caller goes on while the copy works and takes the result later:
    ``ready()`` reads what the pipe holds without waiting (the copy blocks on
    a full pipe until it is read), ``result()`` waits for the rest. The copy's
    view of the heap is the moment of the fork, whenever the result is taken.
    """

    def __init__(self, pid: int, read_fd: int) -> None:
        self.pid = pid
        self.read_fd = read_fd
        self.chunks: list[bytes] = []
        self.done = False
        os.set_blocking(read_fd, False)

    def ready(self) -> bool:
        """Read what the pipe holds now; True once the copy has written all."""
        while not self.done:
            try:
                chunk = os.read(self.read_fd, 1 << 20)
            except BlockingIOError:
                return False
            if not chunk:
                self.done = True
            else:
                self.chunks.append(chunk)
        return True

    def abandon(self, reap: bool) -> None:
        """Drop the job unread; ``reap``: this process forked the copy, so end and reap it."""
        os.close(self.read_fd)  # the copy's next write fails; it exits
        if reap:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass

    def result(self) -> Any:
        """Wait for the copy's result; None if it failed or wrote nothing."""
        if not self.done:
            os.set_blocking(self.read_fd, True)
            while True:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    break
                self.chunks.append(chunk)
            self.done = True
        os.close(self.read_fd)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0  # reaped by a framework's SIGCHLD handler: the bytes say if it ended
        payload, self.chunks = b"".join(self.chunks), []
        if status != 0 or not payload:
            return None
        try:
            return decode_answer(payload)
        except ValueError:
            return None  # the copy died mid-write (killed): no result


def start_in_fork(work: Callable[[], Any], stop_tracing: bool) -> ForkJob | None:
    """Start ``work()`` in a forked copy; None where fork is unavailable or fails.

    ``stop_tracing``: the copy stops tracemalloc first (see STOP_TRACING_BELOW)
    when the work does not read it.
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
            wire.write_all(write_fd, encode_answer(work()))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    return ForkJob(pid, read_fd)


def _in_fork(work: Callable[[], Any], stop_tracing: bool) -> Any:
    """``work()`` in a forked copy, waited for: its result, or None where fork is
    unavailable or fails or the copy did not finish (the caller then does the
    work in-process)."""
    job = start_in_fork(work, stop_tracing)
    return None if job is None else job.result()


def _lengths(table: LengthTable, named: Collection[int], again: bool, chains: bool) -> Packed:
    """The copy's walk: every container's length, aligned to the worker's ``table``
    (which the copy inherited), the rows that grew, and the bounded containers not
    yet ``named``; with ``chains``, how each bounded container is reached (for a
    process that describes them by id without walking, ``heap.resolve``)."""
    walk = Walk().run()
    new_ids, column = table.align(walk.length_of)
    rows = {key: row for row, key in enumerate([*table.ids, *new_ids])
            if key in walk.bound_of}
    bounded = [
        [key, walk.path(walk.node_of[key]), walk.type_name(key), bound, rows[key]]
        for key, bound in walk.bound_of.items() if key not in named
    ]
    header = {
        "rows": len(table), "new_rows": len(new_ids), "again": again,
        "growing": table.growing_rows(column, again), "bounded": bounded,
        "visited": walk.visited, "containers": len(walk.length_of),
        "gc_objects": len(gc.get_objects()),
        "chains": [[key, walk.chain(key)] for key in walk.bound_of] if chains else [],
    }
    return Packed(header, [new_ids.tobytes(), column.tobytes()])


def walk_lengths_in_fork(table: LengthTable, named: Collection[int],
                         again: bool = False) -> Packed | None:
    """Run a Walk in a forked copy of the process: container lengths by ``id``.

    The copy stops tracemalloc before walking, so the walk runs at untraced
    speed (several times faster than under tracemalloc's allocation hook),
    and whatever it touches (reference counts, instance dicts it
    materialises) changes the copy, never the worker. Ids are addresses,
    identical in both processes. Returns None where fork is unavailable or
    fails; the caller then walks in-process.
    """
    answer = _in_fork(lambda: _lengths(table, named, again, True), stop_tracing=True)
    return answer if isinstance(answer, Packed) else None


def start_lengths_in_fork(table: LengthTable, named: Collection[int]) -> ForkJob | None:
    """``walk_lengths_in_fork`` without waiting: a real worker goes on serving while its
    copy walks, and takes the lengths (``job.result()``) later."""
    return start_in_fork(lambda: _lengths(table, named, False, False), stop_tracing=True)


def start_describe_in_fork(
    growing: dict[int, tuple[int, int]], bounded: list[int],
) -> ForkJob | None:
    """Walk and describe containers in a forked copy: what ``HolderProbe`` needs by ``id``.

    ``growing``: id -> (first length, last length) of each container that grew;
    ``bounded``: ids of bounded containers whose newest entries' lines are
    wanted. The copy keeps tracemalloc on (describing reads where items were
    made). A real worker's mid-run description walked in the worker itself
    left its mark there: the walk's tables spread over pymalloc arenas that
    the requests served meanwhile pinned (~1.2 MiB of RSS after an attach).
    The worker takes the answer (``job.result()``) when it is ready.
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
            rows.append([key, path, kind, bound, length, details, walk.chain(key)])
        made = []
        for key in bounded:
            if key in walk.objects:
                container = Container("", walk.objects[key], walk.type_name(key),
                                      walk.length_of.get(key, 0), walk.bound(key))
                made.append([key, lines_made(bounded_entries(container))])
        return {"growing": rows, "bounded": made}

    return start_in_fork(describe, stop_tracing=False)


def describe_in_fork(
    growing: dict[int, tuple[int, int]], bounded: list[int],
) -> dict[str, Any] | None:
    """``start_describe_in_fork``, waited for; None where fork fails or the copy did."""
    job = start_describe_in_fork(growing, bounded)
    return None if job is None else job.result()


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
