"""Messages in, Run out: the one Assembler behind `trace`, the pytest plugin and `leakscope run`.

Whatever way a measured process's messages travel (the harness's pipe, an
armed process's events file, straight from the collector in pytest's own
process), the same ``Assembler.feed`` turns each into loops, per-line change
series, checkpoints and the final facts, and ``finish`` turns them into a
``Run`` (not yet analysed). ``new_run`` is the one place a ``Run`` starts.
Messages reach ``feed`` already checked (``wire.Decoder``) or from the
collector itself; kinds it does not know (a newer minor version's) are
skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from leakscope.measure.memray_window import ENGINES
from leakscope.model import sites as sitemod
from leakscope.model.runfile import Frame, LineDelta, Loop, Run, Site, now_iso

if TYPE_CHECKING:
    from leakscope.measure.native_sites import Capture

# A per-line change as a message carries it: [file, line, size_diff, count_diff].
Change = Sequence[Any]
# The final facts copied from the measured process's ``final`` into observations.
FINAL_OBSERVATIONS = ("gc_enabled", "gc_collections", "harness_seconds", "malloc_counter",
                      "detection", "other_threads_max", "rss_before_tracing_bytes")


class LiveObserver(Protocol):
    """Who is told of each loop as it arrives (the CLI's live lines)."""

    def on_measuring(self, warmup_loops: int) -> None: ...
    def on_phase(self, phase: str, info: dict[str, Any]) -> None: ...
    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None: ...


class NullObserver:
    def on_measuring(self, warmup_loops: int) -> None:
        pass

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        pass

    def on_loop(self, loop: Loop, changes: list[LineDelta]) -> None:
        pass


class Assembler:
    """One measured process's messages, gathered into a Run.

    ``feed`` takes the messages in the order they were sent; ``finish`` adds
    the final facts, sites, holders and (for an armed process of `leakscope
    run`) its ``process`` record. What arrived stays usable after a failure:
    ``finish`` of a run cut short is a partial run.
    """

    def __init__(self, run: Run, top: int, cwd: str,
                 observer: LiveObserver | None = None) -> None:
        self.run = run
        self.top = top
        self.cwd = cwd
        self.observer: LiveObserver = observer or NullObserver()
        self.measured = 0
        # file:line -> change points (measured index, kept bytes, kept blocks)
        self.points: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
        self.current: dict[tuple[str, int], tuple[int, int]] = {}
        self.checkpoints: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        # The worker was imported; until then a stall is a hang at import.
        self.loaded = False
        # Every loop the run wants has arrived; only the child's finish is left.
        self.gathered = False
        self.on_gathered: Callable[[], None] | None = None
        # An armed process of `leakscope run`: its hello, what it says it is, its
        # last holder report and what the copy that closed its traced window saw.
        self.hello: dict[str, Any] | None = None
        self.process: dict[str, Any] = {}
        self.holders: dict[str, Any] | None = None
        self.window: dict[str, Any] | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "started": self._started, "hello": self._hello, "loaded": self._loaded,
            "measuring": self._measuring, "phase": self._phase, "loop": self._loop,
            "checkpoint": self._checkpoint, "gathered": self._gathered, "final": self._final,
            "error": self._error, "process": self._process, "lines": self._lines,
            "holders": self._holders, "window": self._window,
            "agent-error": self._agent_error,
        }

    # ------------------------------------------------------------ messages

    def feed(self, message: dict[str, Any]) -> None:
        """Take in one message (a kind this leakscope does not know is skipped)."""
        handler = self._handlers.get(message["t"])
        if handler is not None:
            handler(message)

    def _started(self, message: dict[str, Any]) -> None:
        # The worker's interpreter may not be ours: its paths say what is library.
        self.run.python = message.get("python") or self.run.python
        sitemod.register_interpreter(message.get("library_roots") or [],
                                     message.get("own_dirs") or [])

    def _hello(self, message: dict[str, Any]) -> None:
        self.hello = message
        sitemod.register_interpreter(message.get("library_roots") or [],
                                     message.get("own_dirs") or [])
        self.process = {
            "pid": message["pid"], "parent_pid": message["parent_pid"],
            "role": message["role"], "command": message["command"],
            "unit": message.get("unit") or "unit", "framework": message.get("framework"),
            **(message.get("info") or {}),
        }
        self.run.target = message["command"]
        self.run.python = message.get("python", "")
        self.run.started_at = now_iso()

    def _loaded(self, message: dict[str, Any]) -> None:
        self.loaded = True

    def _measuring(self, message: dict[str, Any]) -> None:
        self.run.settings["warmup_used"] = message["warmup_loops"]
        self.observer.on_measuring(message["warmup_loops"])

    def _phase(self, message: dict[str, Any]) -> None:
        phases = self.run.observations.setdefault("phases", [])
        phases.append({"phase": message["phase"], "after_loops": len(self.run.loops),
                       **message["info"]})
        self.observer.on_phase(message["phase"], message["info"])

    def _loop(self, message: dict[str, Any]) -> None:
        loop, changes = self.add_loop(message["loop"], message["changes"])
        self.observer.on_loop(loop, changes)

    def _checkpoint(self, message: dict[str, Any]) -> None:
        self.add_checkpoint(message["loops_done"], message["observation"])

    def _gathered(self, message: dict[str, Any]) -> None:
        self.gathered = True
        if self.on_gathered is not None:
            self.on_gathered()

    def _final(self, message: dict[str, Any]) -> None:
        self.final = message["final"]
        self.outcome = message["outcome"]

    def _error(self, message: dict[str, Any]) -> None:
        self.error = message

    def _process(self, message: dict[str, Any]) -> None:
        self.process.update({"role": message["role"], "unit": message.get("unit") or "unit",
                             "framework": message.get("framework"),
                             **(message.get("info") or {})})

    def _lines(self, message: dict[str, Any]) -> None:
        self.add_late_changes(message["changes"])

    def _holders(self, message: dict[str, Any]) -> None:
        self.holders = message["report"]

    def _window(self, message: dict[str, Any]) -> None:
        self.window = message

    def _agent_error(self, message: dict[str, Any]) -> None:
        self.process["agent_error"] = message.get("message")

    # --------------------------------------------------------------- loops

    def display(self, filename: str) -> str:
        return sitemod.display_path(filename, self.cwd)

    def add_loop(
        self, data: dict[str, Any], raw_changes: Sequence[Change]
    ) -> tuple[Loop, list[LineDelta]]:
        loop = Loop(**{k: v for k, v in data.items() if k in Loop.__dataclass_fields__})
        extra = {k: v for k, v in data.items() if k not in Loop.__dataclass_fields__}
        for key, value in extra.items():  # figures newer than the dataclass
            setattr(loop, key, value)
        changes = []
        if not loop.warmup and loop.phase != "detect":
            for filename, line, size_diff, count_diff in raw_changes:
                at = (filename, line)
                size, count = self.current.get(at, (0, 0))
                size, count = size + size_diff, count + count_diff
                self.current[at] = (size, count)
                self.points.setdefault(at, []).append((self.measured, size, count))
                changes.append(LineDelta(self.display(filename), line, size_diff, count_diff))
            changes.sort(key=lambda c: (abs(c.size_diff), c.count_diff), reverse=True)
            loop.top = changes[: self.top]
            self.measured += 1
        self.run.loops.append(loop)
        return loop, changes

    def add_late_changes(self, raw_changes: Sequence[Change]) -> None:
        """Line changes that belong to the last measured loop, sent after it.

        A real worker's process diffs its lines only every few units; the
        units since its last diff arrive as one change when it exits.
        """
        if self.measured == 0:
            return
        last = self.measured - 1
        for filename, line, size_diff, count_diff in raw_changes:
            key = (filename, line)
            size, count = self.current.get(key, (0, 0))
            size, count = size + size_diff, count + count_diff
            self.current[key] = (size, count)
            points = self.points.setdefault(key, [])
            if points and points[-1][0] == last:
                points[-1] = (last, size, count)
            else:
                points.append((last, size, count))

    def add_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        observation["loops_done"] = loops_done
        loops = self.run.loops
        if loops_done < len(loops):
            # A walk whose copy answered some units later (a real worker does not
            # wait for it): measured where it was taken, not where it arrived.
            observation["measured_done"] = sum(
                1 for loop in loops[:loops_done] if not loop.warmup and loop.phase != "detect")
        else:
            observation["measured_done"] = self.measured
        if self.checkpoints and self.checkpoints[-1]["loops_done"] == loops_done:
            # A walk at the same point as the last (the process exiting right
            # after one): the child's series replace that point too.
            self.checkpoints[-1] = observation
        else:
            self.checkpoints.append(observation)
        if self.run.loops and loops_done > 0:
            self.run.loops[min(loops_done, len(self.run.loops)) - 1].gc_objects = observation.get(
                "gc_objects"
            )

    def series(self, key: tuple[str, int]) -> list[int]:
        values = [0] * self.measured
        points = self.points.get(key, [])
        for (index, size, _), nxt in zip(points, points[1:] + [(self.measured, 0, 0)], strict=True):
            for i in range(index, nxt[0]):
                values[i] = size
        return values

    def build_sites(
        self, deep: dict[tuple[str, int], list[tuple[str, int]]] | None = None
    ) -> list[Site]:
        """Sites from tracemalloc's lines; ``deep`` (memray's full Python stacks by
        innermost line) completes a traceback too short to reach the user's code."""
        tracebacks = {
            (key[0], key[1]): [tuple(f) for f in frames]
            for key, frames in (self.final or {}).get("tracebacks", [])
        }
        result = []
        for key in self.points:
            size, count = self.current.get(key, (0, 0))
            raw = tracebacks.get(key) or [key]
            if deep and key in deep and not any(sitemod.is_user_file(f) for f, _ in raw):
                raw = deep[key]
            frames = without_harness(raw)
            traceback = [
                Frame(self.display(f), int(n), sitemod.function_at(f, int(n))) for f, n in frames
            ]
            user = next(
                (fr for fr, (f, _) in zip(traceback, frames, strict=True)
                 if sitemod.is_user_file(f)),
                None,
            )
            series = self.series(key)
            result.append(
                Site(
                    file=traceback[0].file, line=key[1], function=traceback[0].function,
                    traceback=traceback, user_frame=user, bytes_per_iteration=0.0,
                    blocks_per_iteration=self._block_rate(key), growing=False,
                    kept_bytes=size, kept_blocks=count, series=series,
                )
            )
        return result

    def _block_rate(self, key: tuple[str, int]) -> float:
        points = self.points.get(key, [])
        if self.measured < 2 or not points:
            return 0.0
        return round(points[-1][2] / self.measured, 2)

    # -------------------------------------------------------------- finish

    def finish(self, final: dict[str, Any] | None = None) -> Run:
        """The Run of every message fed so far (not yet analysed).

        ``final`` is the measured process's final facts when they did not come
        as a message (the pytest plugin's collector hands them over itself).
        """
        if final is not None:
            self.final = final
        run = self.run
        if self.hello is not None:
            self._finish_process_facts()
        final = self.final or {}
        for key in FINAL_OBSERVATIONS:
            if key in final:
                run.observations[key] = final[key]
        if "gc_final" in final:
            gc_final = final["gc_final"]
            gc_final["freed_by_line"] = [
                [self.display(f), n, b, c] for f, n, b, c in gc_final.get("freed_by_line", [])
            ]
            gc_final["kept_by_line"] = [
                [self.display(f), n, b] for f, n, b in gc_final.get("kept_by_line", [])
            ]
            run.observations["gc_final"] = gc_final
        capture = self._read_locator(final.get("locator") or {})
        run.sites = self.build_sites(capture.deep if capture else None)
        if capture is not None:
            run.sites.extend(capture.sites)
        if final.get("holders"):
            from leakscope.heap.report import build_holders

            report = final["holders"]
            measured = [c["measured_done"] for c in self.checkpoints]
            run.holders, run.bounded = build_holders(report, measured, self.display)
            holder_search = {
                key: report.get(key)
                for key in ("checkpoints", "walk_seconds", "max_visited", "forked_walks")
            }
            backref = report.get("backref")
            if backref:
                holder_search["backrefs"] = backref.get("path") or backref
            run.observations["holder_search"] = holder_search
        run.observations["elapsed_seconds"] = round(
            sum(loop.seconds or 0 for loop in run.loops), 4
        )
        if "cwd" not in run.observations:
            run.observations["cwd"] = self.cwd
        if self.hello is not None:
            run.process = self.process_record()
        return run

    def _finish_process_facts(self) -> None:
        """An armed process: its final facts completed from its window and holder messages."""
        if self.final is None:
            # Killed before it could save: what every unit wrote still counts.
            self.run.observations["unsaved_end"] = True
            self.final = {}
        final = self.final
        if self.window is not None:
            # Described by the copy that closed the traced window: its holders
            # had the last walk; its tracebacks and collection are the window's.
            for key, value in (self.window.get("end") or {}).items():
                final.setdefault(key, value)
            if self.window.get("holders") is not None:
                final["holders"] = self.window["holders"]
        if "holders" not in final and self.holders:
            final["holders"] = self.holders

    def process_record(self) -> dict[str, Any]:
        """The run file's ``process``: who the armed process is and how its run went."""
        run = self.run
        record: dict[str, Any] = {
            key: self.process.get(key) for key in ("pid", "parent_pid", "role", "command")
        }
        record.update({key: value for key, value in self.process.items()
                       if key not in record and value is not None})
        record["units"] = len(run.loops)
        record["traced_units"] = sum(1 for loop in run.loops if loop.traced_bytes is not None)
        located = next((phase for phase in run.observations.get("phases", [])
                        if phase.get("phase") == "locate"), None)
        if located:
            record["tracing_from_unit"] = located.get("after_units")
        final = self.final or {}
        for key in ("rss_bytes", "peak_rss_bytes"):
            if final.get(key) is not None:
                record[key] = final[key]
        if self.outcome:
            record["ended_by"] = self.outcome.get("reason")
        return record

    def _read_locator(self, locator: dict[str, Any]) -> Capture | None:
        """The memray window's capture (native sites, deep stacks), and which engine located.

        ``observations.locator`` is {"engine", "note", "loops"}: the engine that
        located this run's sites and, when memray was asked for but not used,
        why (one line, also printed).
        """
        run = self.run
        if not locator:
            if run.mode == "fast" and any(loop.phase == "locate" for loop in run.loops):
                run.observations["locator"] = {"engine": "tracemalloc", "note": ""}
            return None
        engine = locator.get("engine") if locator.get("engine") in ENGINES else "tracemalloc"
        note = str(locator.get("note") or "")
        capture = None
        if engine == "memray":
            from leakscope.measure.native_sites import read_capture

            capture = read_capture(locator, self.display)
            note = capture.note
        run.observations["locator"] = {"engine": engine, "note": note,
                                       "loops": int(locator.get("loops") or 0)}
        return capture


def without_harness(frames: list[Any]) -> list[Any]:
    """The traceback as the worker sees it: leakscope's harness and runpy cut off."""
    kept = [
        frame for frame in frames
        if not sitemod.is_own_file(frame[0]) and not str(frame[0]).startswith("<frozen runpy")
        and not str(frame[0]).endswith("runpy.py")
    ]
    return kept or frames[:1]
