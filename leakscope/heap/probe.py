"""The probe the collectors call at checkpoints: walks, growth, bounds, the locator."""

from __future__ import annotations

import gc
import time
import types
from typing import Any

from leakscope.heap.describe import Container, bounded_entries, describe_growth, lines_made
from leakscope.heap.fork import (
    ForkJob,
    Packed,
    describe_in_fork,
    start_describe_in_fork,
    start_lengths_in_fork,
    walk_lengths_in_fork,
)
from leakscope.heap.lengths import LengthTable
from leakscope.heap.locate import GrowthLocator
from leakscope.heap.resolve import find_by_chain
from leakscope.heap.walk import Walk, length_of


class HolderProbe:
    """Walks the heap at each checkpoint and keeps only lengths between walks."""

    def __init__(self) -> None:
        # Every container's length at each checkpoint (heap.lengths), and the
        # rows of the containers named or growing, by id.
        self.table = LengthTable()
        self.rows: dict[int, int] = {}
        # How the last walk that said so reached each container (heap.resolve).
        self.chains: dict[int, list[int]] = {}
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
        # A checkpoint walk running in a forked copy while the worker goes on,
        # and a description of the growers likewise.
        self._pending: ForkJob | None = None
        self._describing: ForkJob | None = None

    def observe(self, final: bool = False, again: bool = False) -> dict[str, Any]:
        """Record every container's length; at the final checkpoint, describe the growers.

        Checkpoints before the last walk in a forked copy of the process
        (``walk_lengths_in_fork``); the last walks here, because describing a
        holder needs the live objects and tracemalloc's record of them.
        ``again``: no unit ran since the last checkpoint (a worker that exits
        right after a walk), so this walk replaces that point instead of adding
        an equal one, which would read as a container that stopped growing.
        """
        self.finish_pending()
        started = time.perf_counter()
        again = again and self.checkpoints > 0
        observation = None
        if not final:
            observation = self._record_packed(
                walk_lengths_in_fork(self.table, self.paths, again), again)
        if observation is None:
            walk = Walk().run()
            observation = self._record_walk(walk, again)
            if final:
                self._describe_growing(walk)
        seconds = time.perf_counter() - started
        self.walk_seconds += seconds
        observation["seconds"] = round(seconds, 4)
        return observation

    def series(self, key: int) -> list[int]:
        """A container's length at every checkpoint (-1 where it was not found); []
        if never seen."""
        row = self.rows.get(key)
        if row is None:
            row = self.table.rows_of({key}).get(key)
            if row is None:
                return []
            self.rows[key] = row
        return self.table.series(row)

    def start_observe(self) -> bool:
        """A checkpoint whose walk the worker does not wait for: the forked copy walks
        while the worker serves, and ``finish_pending`` records its lengths. False
        where fork fails (the caller then observes as usual)."""
        self.finish_pending()
        started = time.perf_counter()
        job = start_lengths_in_fork(self.table, self.paths)
        self.walk_seconds += time.perf_counter() - started
        if job is None:
            return False
        self._pending = job
        return True

    def drop_pending(self, reap: bool) -> None:
        """Forget the pending walk: its pipe closed here, its copy reaped if ``reap``."""
        job, self._pending = self._pending, None
        if job is not None:
            job.abandon(reap)

    @property
    def pending(self) -> bool:
        return self._pending is not None

    def pending_ready(self) -> bool:
        """Whether the pending walk's copy has answered (read without waiting)."""
        return self._pending is not None and self._pending.ready()

    def finish_pending(self) -> dict[str, Any] | None:
        """Record the pending walk's lengths (waiting for its copy if it must) as the
        checkpoint it was started at; None when none was pending. A copy that
        failed is walked for here, a point late rather than none."""
        job, self._pending = self._pending, None
        if job is None:
            return None
        started = time.perf_counter()
        observation = self._record_packed(job.result(), again=False)
        if observation is None:
            observation = self._record_walk(Walk().run(), again=False)
        seconds = time.perf_counter() - started
        self.walk_seconds += seconds
        observation["seconds"] = round(seconds, 4)
        observation["waited"] = False
        return observation

    def _record_packed(self, answer: Any, again: bool) -> dict[str, Any] | None:
        """A copy's checkpoint into the table: its arrays appended, the rows it found
        growing taken as they are. None, with nothing changed, when there is no answer
        or it was made against another table than this one."""
        if not isinstance(answer, Packed) or len(answer.blobs) != 2:
            return None
        header = answer.header
        if header["rows"] != len(self.table) or bool(header["again"]) != again:
            return None
        try:
            self.table.add_packed(answer.blobs[0], answer.blobs[1], again)
        except ValueError:
            return None
        ids = self.table.ids
        self._named(header["bounded"])
        self.chains.update((int(key), chain) for key, chain in header.get("chains", []))
        self._checkpoint_added(int(header["visited"]), forked=True)
        growing = [ids[row] for row in header["growing"]]
        self.rows.update(zip(growing, header["growing"]))
        self._growing_cache = (self.checkpoints, growing)
        return {"containers": int(header["containers"]), "visited": int(header["visited"]),
                "forked": True, "gc_objects": int(header["gc_objects"])}

    def _record_walk(self, walk: Walk, again: bool) -> dict[str, Any]:
        """A checkpoint walked in this process into the table."""
        self.table.add(walk.length_of, again)
        self.chains.update((key, walk.chain(key)) for key in walk.bound_of)
        new = [key for key in walk.bound_of if key not in self.paths]
        rows = self.table.rows_of(set(new))
        self._named([
            [key, walk.path(walk.node_of[key]), walk.type_name(key), walk.bound_of[key], rows[key]]
            for key in new
        ])
        self._checkpoint_added(walk.visited, forked=False)
        return {"containers": len(walk.length_of), "visited": walk.visited, "forked": False}

    def _named(self, bounded: list[list[Any]]) -> None:
        """Bounded containers found by a walk: [id, path, type, bound, row] each."""
        for key, path, kind, bound, row in bounded:
            if key not in self.paths:
                self.paths[key] = path
                self.kinds[key] = (kind, int(bound))
                self.rows[key] = int(row)

    def _checkpoint_added(self, visited: int, forked: bool) -> None:
        self.visited = max(self.visited, visited)
        self.forked_walks += forked
        self.checkpoints = self.table.checkpoints
        self._growing_cache = None
        self._growing = []

    def describe_now(self) -> bool:
        """Walk here and describe the containers that grew so far, adding no checkpoint.

        A real worker has no last loop to wait for: once the checkpoints show
        growth, it describes the growers mid-run and locates their line in the
        next unit. True when there was something to describe.
        """
        keys = self._growing_keys()
        if not keys:
            return False
        started = time.perf_counter()
        if not self._describe_forked(keys):
            self._describe_growing(Walk().run())
        self.walk_seconds += time.perf_counter() - started
        return bool(self._growing)

    def describe_known(self) -> bool:
        """After a walk that only measured lengths: what a final walk would describe,
        taken here by id, without walking under tracemalloc.

        The growers were described mid-run (``describe_now``); the bounded
        containers' newest entries' lines are read here from their live objects,
        found among the gc's objects. False, with nothing changed, when a grower
        has no description or a bounded container is not among the gc's objects:
        the caller then walks and describes as ``observe(final=True)`` does.
        """
        if any(key not in self.details for key in self._growing_keys()):
            return False
        wanted = {key: kind for key, (kind, bound) in self.kinds.items() if bound is not None}
        live = self._find_live(wanted)
        if len(live) < len(wanted):
            return False
        for key, obj in live.items():
            kind, bound = self.kinds[key]
            series = self.series(key) or [0]
            container = Container(self.paths.get(key, ""), obj, kind, max(0, series[-1]), bound)
            self.details.setdefault(key, {})["lines_made"] = lines_made(bounded_entries(container))
        return True

    def _describe_forked(self, keys: list[int]) -> bool:
        """describe_now's walk in a forked copy; the growers' live objects found here by id
        among the gc's objects (the locator needs them), no walk in the worker.

        False, with nothing changed, where fork fails or a grower is not among the
        gc's objects (a dict of atoms it does not track): the caller walks here.
        """
        described = describe_in_fork(*self._describe_arguments(keys))
        return described is not None and self._take_described(described)

    def _describe_arguments(self, keys: list[int]) -> tuple[dict[int, tuple[int, int]], list[int]]:
        growing = {}
        for key in keys:
            series = self.series(key)
            growing[key] = (series[0], series[-1])
        bounded = [key for key, (_, bound) in self.kinds.items() if bound is not None]
        return growing, bounded

    def _take_described(self, described: dict[str, Any]) -> bool:
        """A copy's descriptions in, with the growers' live objects found here by id.

        False, with nothing changed, when a grower is no longer among the gc's
        objects as the container the copy saw (freed since, its id maybe reused).
        """
        kinds = {int(row[0]): row[2] for row in described["growing"]}
        self.chains.update((int(row[0]), row[6]) for row in described["growing"])
        live = self._find_live(kinds)
        if len(live) < len(kinds):
            return False
        self._growing = []
        for key, path, kind, bound, length, details, _ in described["growing"]:
            self.paths[key] = path
            self.kinds[key] = (kind, bound)
            self.details[key] = details
            self._growing.append(Container(path, live[key], kind, length, bound))
        for key, made in described["bounded"]:
            self.details.setdefault(key, {})["lines_made"] = made
        return True

    def _find_live(self, kinds: dict[int, str]) -> dict[int, Any]:
        """The live containers of ``kinds`` (id -> type name) that are still what a walk
        saw: by their chains (heap.resolve), else among the gc's objects."""
        live: dict[int, Any] = {}
        for key, kind in kinds.items():
            chain = self.chains.get(key)
            obj = find_by_chain(chain) if chain else None
            if obj is not None and _is_kind(obj, kind):
                live[key] = obj
        missing = {key for key in kinds if key not in live}
        if missing:
            # No chain (a walk that did not send them), or one step replaced since.
            for obj in gc.get_objects():
                key = id(obj)
                if key in missing and _is_kind(obj, kinds[key]):
                    live[key] = obj
        return live

    def start_describe(self) -> bool:
        """``describe_now`` without waiting: the copy describes while the worker serves,
        and ``finish_describe`` takes its answer. False when nothing grows, a
        description is already under way, or fork fails (the caller may then
        ``describe_now``)."""
        keys = self._growing_keys()
        if not keys or self._describing is not None:
            return False
        started = time.perf_counter()
        self._describing = start_describe_in_fork(*self._describe_arguments(keys))
        self.walk_seconds += time.perf_counter() - started
        return self._describing is not None

    @property
    def describing(self) -> bool:
        return self._describing is not None

    def describe_ready(self) -> bool:
        """Whether the description's copy has answered (read without waiting)."""
        return self._describing is not None and self._describing.ready()

    def finish_describe(self) -> bool:
        """Take the description (waiting for its copy if it must); a copy that failed, or
        whose growers are gone, is made up for by a walk here. True when a grower
        was described."""
        job, self._describing = self._describing, None
        if job is None:
            return False
        started = time.perf_counter()
        described = job.result()
        if not isinstance(described, dict) or not self._take_described(described):
            self._describe_growing(Walk().run())
        self.walk_seconds += time.perf_counter() - started
        return bool(self._growing)

    def drop_describe(self, reap: bool) -> None:
        """Forget the description under way: its pipe closed here, its copy reaped if
        ``reap``."""
        job, self._describing = self._describing, None
        if job is not None:
            job.abandon(reap)

    def _describe_growing(self, walk: Walk) -> None:
        self._growing = []
        for key in self._growing_keys():
            if key not in walk.objects:
                continue
            path = self.paths[key] = walk.path(walk.node_of[key])
            kind = walk.type_name(key)
            self.kinds[key] = (kind, walk.bound(key))
            series = self.series(key)
            length = walk.length_of.get(key, series[-1])
            container = Container(path, walk.objects[key], kind, length, walk.bound(key))
            self.details[key] = describe_growth(container, length - series[0])
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
            self.details.setdefault(key, {})["lines_made"] = lines_made(
                bounded_entries(container))

    def _growing_keys(self) -> list[int]:
        # Read several times per checkpoint: computed once each (by the walking
        # copy when it walked, see _record_packed).
        if self._growing_cache is None or self._growing_cache[0] != self.checkpoints:
            ids = self.table.ids
            rows = self.table.growing_rows()
            growing = [ids[row] for row in rows]
            self.rows.update(zip(growing, rows))
            self._growing_cache = (self.checkpoints, growing)
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
                "type": kind, "bound": bound, "series": self.series(key),
                **self.details.get(key, {}), "grown_at_stack": self.grown_at.get(path, []),
            }
        bounded = {}
        for key, (kind, bound) in self.kinds.items():
            series = [n for n in self.series(key) if n >= 0]
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


def _is_kind(obj: Any, kind: str) -> bool:
    """Whether ``obj`` is still a container of the type a walk named (not another
    object at a freed one's address)."""
    measured = length_of(obj)
    return measured is not None and measured[0] == kind
