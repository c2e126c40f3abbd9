"""The collector's phases one by one: what each records, and when it hands over to the next."""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
import types
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leakscope.heap import fork
from leakscope.measure import counters, phases
from leakscope.measure.collector import Collector
from leakscope.measure.phases import (
    CheckpointSchedule,
    DetectPhase,
    FinishedPhase,
    HolderLocatorPhase,
    LocatePhase,
    TracedPhase,
    UnitTracedPhase,
    WarmupPhase,
    WatchPhase,
)
from leakscope.measure.watching import (
    CHECK_EVERY,
    COUNTER_SPACING_READS,
    MAX_CHECK_GAP,
    MAX_COUNTER_GAP,
    MAX_WATCH_POINTS,
    WATCH_MIN_UNITS,
    CounterSpacing,
)
from leakscope.measure.worker_collector import WORKER_MIN_STEPS, UnitCollector
from leakscope.model.settings import Settings

KEPT: list[bytes] = []


class Recorder:
    """An observer that keeps every call, in order, as plain data."""

    def __init__(self) -> None:
        self.loops: list[dict[str, Any]] = []
        self.events: list[tuple[str, Any]] = []

    def on_measuring(self, warmup_loops: int) -> None:
        self.events.append(("measuring", warmup_loops))

    def on_phase(self, phase: str, info: dict[str, Any]) -> None:
        self.events.append(("phase", (phase, dict(info))))

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        self.loops.append(loop)

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        self.events.append(("checkpoint", loops_done))

    def on_holders(self, snapshot: dict[str, Any]) -> None:
        self.events.append(("holders", snapshot))

    def on_lines(self, changes: list[tuple[str, int, int, int]]) -> None:
        self.events.append(("lines", len(changes)))

    def on_window(self, window: dict[str, Any]) -> None:
        self.events.append(("window", sorted(window)))

    def phases(self) -> list[str]:
        return [loop["phase"] for loop in self.loops]


class LocatingProbe:
    """A holder probe that finds nothing but always asks for the locator's extra loop."""

    def __init__(self) -> None:
        self.locating = 0
        self.stopped = 0
        self.checkpoints = 0
        self.walk_seconds = 0.0
        self.backref: dict[str, Any] | None = None
        self.caller: Any = None

    def observe(self, final: bool = False, again: bool = False) -> dict[str, Any]:
        return {}

    def start_locating(self, caller: Any) -> bool:
        self.locating += 1
        self.caller = caller
        return True

    def stop_locating(self) -> None:
        self.stopped += 1

    def report(self) -> dict[str, Any]:
        return {}

    def snapshot(self) -> dict[str, Any]:
        return {}

    def describe_now(self) -> bool:
        return False

    def describe_known(self) -> bool:
        return True

    def start_observe(self) -> bool:
        return False  # no forked copy: every walk is waited for

    def pending_ready(self) -> bool:
        return False

    pending = False

    def finish_pending(self) -> dict[str, Any] | None:
        return None

    def drop_pending(self, reap: bool) -> None:
        pass

    def growing_paths(self) -> list[str]:
        return []


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    KEPT.clear()
    yield
    KEPT.clear()
    if tracemalloc.is_tracing():
        tracemalloc.stop()


def _drive(collector: Collector, loops: int, keep: int = 0) -> int:
    """Run up to ``loops`` loops that each keep ``keep`` small objects; the loops run."""
    collector.begin()
    for done in range(1, loops + 1):
        KEPT.extend(bytes(40) for _ in range(keep))
        if not collector.end_loop():
            return done
    return loops


# ------------------------------------------------------------------ warm-up


def test_warmup_of_a_fixed_count_hands_over_to_measuring() -> None:
    recorder = Recorder()
    collector = Collector(Settings(iterations=5, warmup=3, holders=False), recorder)
    assert isinstance(collector.phase, WarmupPhase)
    collector.begin()
    for _ in range(2):
        collector.end_loop()
        assert isinstance(collector.phase, WarmupPhase) and not collector.measuring
    collector.end_loop()
    assert isinstance(collector.phase, TracedPhase)
    assert collector.measuring and collector.warmup_loops == 3
    assert ("measuring", 3) in recorder.events
    assert recorder.phases() == ["warmup"] * 3
    collector.finish()


def test_no_warmup_measures_from_the_first_loop() -> None:
    recorder = Recorder()
    collector = Collector(Settings(iterations=3, warmup=0, holders=False), recorder)
    assert _drive(collector, 10) == 3
    assert recorder.phases() == ["measure"] * 3
    assert recorder.events[0] == ("measuring", 0)
    collector.finish()


@pytest.mark.parametrize(("history", "settled"), [
    ([100, 110, 120, 130, 140], True),        # a steady rate (a leak's) is settled
    ([100, 100, 100, 100, 100], True),        # so is no growth at all
    ([100, 200, 250, 260, 262], False),       # start-up growth still dying away
])
def test_auto_warmup_settles_when_block_growth_is_steady(
    history: list[int], settled: bool,
) -> None:
    collector = Collector(Settings(warmup="auto", holders=False), Recorder())
    warmup = collector.phase
    assert isinstance(warmup, WarmupPhase) and warmup.target is None
    warmup.blocks_history = history
    collector.index = len(history)
    assert warmup.finished() is settled


def test_auto_warmup_ends_at_its_maximum_whatever_the_growth() -> None:
    collector = Collector(Settings(warmup="auto", holders=False), Recorder())
    warmup = collector.phase
    assert isinstance(warmup, WarmupPhase)
    warmup.blocks_history = [1, 50, 52, 300, 301]
    collector.index = phases.AUTO_WARMUP_MAX
    assert warmup.finished()


# ----------------------------------------------------------- full tracing


def test_full_mode_traces_every_measured_loop_then_stops() -> None:
    recorder = Recorder()
    collector = Collector(Settings(iterations=8, warmup=2, holders=False, frames=5), recorder)
    assert _drive(collector, 100, keep=3) == 10
    assert recorder.phases() == ["warmup"] * 2 + ["measure"] * 8
    assert all("traced_bytes" in loop for loop in recorder.loops[2:])
    assert collector.traced == collector.measured == 8
    assert isinstance(collector.phase, FinishedPhase)
    # A tick after the end records nothing and still says stop.
    assert collector.end_loop() is False
    assert len(recorder.loops) == 10
    final = collector.finish()
    assert final["measured_loops"] == 8 and final["mode"] == "full"
    assert "gc_final" in final


def test_holder_checkpoints_fall_at_fractions_of_the_traced_loops() -> None:
    collector = Collector(Settings(iterations=8, warmup=0, holders=True), Recorder())
    traced = collector.phase
    assert isinstance(traced, WarmupPhase)
    following = traced.following
    assert isinstance(following, TracedPhase)
    assert following.checkpoints == {0, 2, 4, 6, 8}


def test_the_holder_locator_takes_one_loop_more_without_an_index() -> None:
    recorder = Recorder()
    probe = LocatingProbe()
    collector = Collector(Settings(iterations=4, warmup=1), recorder, probe)
    collector.begin()
    for _ in range(5):
        assert collector.end_loop()
    assert isinstance(collector.phase, HolderLocatorPhase)
    assert probe.locating == 1
    # The locator follows the loop from the frame that called end_loop().
    assert probe.caller.f_code.co_name == sys._getframe().f_code.co_name
    index = collector.index
    assert collector.end_loop() is False
    assert collector.index == index  # the locator's loop is not a measured one
    assert probe.stopped == 1
    assert len(recorder.loops) == 5
    collector.finish()


# ------------------------------------------------------------ fast mode


def test_fast_mode_without_growth_ends_after_detect_untraced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DetectPhase, "growth_detected", lambda self: False)
    recorder = Recorder()
    settings = Settings(iterations=20, warmup=2, mode="fast", holders=False)
    collector = Collector(settings, recorder)
    assert _drive(collector, 100) == 22
    assert recorder.phases() == ["warmup"] * 2 + ["detect"] * 20
    assert not tracemalloc.is_tracing() and collector.traced == 0
    assert ("measuring", 2) in recorder.events
    collector.finish()


def test_fast_mode_locates_when_the_counters_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    def grew(self: DetectPhase) -> bool:
        self.engine.detection = {"growth": True}
        return True

    monkeypatch.setattr(DetectPhase, "growth_detected", grew)
    recorder = Recorder()
    settings = Settings(iterations=20, warmup=2, mode="fast", holders=False, locate_loops=4,
                        locator="tracemalloc")
    collector = Collector(settings, recorder)
    assert _drive(collector, 100, keep=2) == 26
    assert recorder.phases() == ["warmup"] * 2 + ["detect"] * 20 + ["locate"] * 4
    assert ("phase", ("locate", {"growth": True})) in recorder.events
    assert collector.traced == 4 and collector.measured == 24
    collector.finish()


def test_locate_phase_traces_at_least_two_loops_with_three_walks() -> None:
    collector = Collector(Settings(mode="fast", holders=False), Recorder())
    for loops, walks in ((1, {0, 1, 2}), (6, {0, 3, 6})):
        locate = LocatePhase(collector, loops)
        assert locate.target == max(2, loops)
        assert locate.checkpoints == walks


@pytest.mark.parametrize(("blocks", "grows"), [
    ([1000.0 + 5 * i for i in range(50)], True),
    ([1000.0] * 50, False),
])
def test_detect_rule_on_the_block_series(blocks: list[float], grows: bool) -> None:
    collector = Collector(Settings(iterations=50, mode="fast", holders=False), Recorder())
    detect = collector.phase.following  # type: ignore[attr-defined]
    assert isinstance(detect, DetectPhase)
    detect.blocks[:] = detect.blocks.__class__("d", blocks)
    detect.malloc[:] = detect.malloc.__class__("d", [5e6] * 50)
    assert detect.growth_detected() is grows
    assert collector.detection["growth"] is grows


# ------------------------------------------------------------ real workers


def _unit_collector(recorder: Recorder, **kwargs: Any) -> UnitCollector:
    options: dict[str, Any] = {"warmup": 2, "holders": False, "sample": 0, "trace_units": 40}
    flags = {key: kwargs.pop(key) for key in ("may_trace", "trace_first") if key in kwargs}
    options.update(kwargs)
    return UnitCollector(Settings(**options), recorder, None, **flags)


def test_a_watched_process_goes_to_its_window_only_on_the_check_beat(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [False, True]
    checks: list[int] = []

    def grows(self: WatchPhase) -> bool:
        checks.append(self.engine.measured)
        return answers.pop(0)

    monkeypatch.setattr(WatchPhase, "growth_confirmed", grows)
    collector = _unit_collector(Recorder())
    watch = collector.watch
    assert watch is not None and watch.window is collector.traced_phase
    collector.start_measuring()
    collector.measured = WATCH_MIN_UNITS - 2
    assert watch.record(collector.index, 0.001) is watch  # too few units for the rule
    assert watch.record(collector.index, 0.001) is watch  # the first check: no growth
    assert checks == [WATCH_MIN_UNITS]
    assert watch.schedule.next_at >= WATCH_MIN_UNITS + CHECK_EVERY
    assert watch.record(collector.index, 0.001) is watch  # not on the beat
    beat = watch.schedule.next_at
    collector.measured = beat - 1
    assert watch.record(collector.index, 0.001) is watch.window  # on the beat: growth
    assert checks == [WATCH_MIN_UNITS, beat]


def test_a_watched_process_that_runs_long_judges_a_bounded_series_within_its_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process that never grows, watched for 6,000 units: the rule's series stays
    within MAX_WATCH_POINTS, each point on an even grid, and the rule runs within
    RULE_SHARE of the units' time. Before, the series held every read and the rule
    ran every 20 units on all of it (20-45 ms a check after a thousand units in a
    Celery pool child: half of a 4 s run)."""
    class Forgetful(Recorder):
        def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]
                    ) -> None:
            pass  # keeps no unit: this process does not grow

    checks: list[int] = []
    collector = _unit_collector(Forgetful())
    watch = collector.watch
    assert watch is not None
    real = WatchPhase.counters_grow

    def counted(self: WatchPhase) -> bool:
        checks.append(self.engine.measured)
        return real(self)

    monkeypatch.setattr(WatchPhase, "counters_grow", counted)
    spacing = watch.spacing
    # Units of 2 ms; each counters' read "costs" 100 µs (a gap of 3).
    monkeypatch.setattr(spacing, "observe", lambda unit, read: CounterSpacing.observe(
        spacing, 0.002, None if read is None else 0.0001))
    _drive(collector, 2 + 6000)
    collector.close()
    assert spacing.gap == 3
    assert MAX_WATCH_POINTS // 2 <= len(watch.series) < MAX_WATCH_POINTS
    assert watch.series.stride >= 4  # 6,000 units, 3 apart: halved at least twice
    primed, checks = checks[0], checks[1:]
    assert primed == 0  # the rule run once before the first read (prime_the_rule)
    assert checks[0] == WATCH_MIN_UNITS
    # Spaced by their cost: at least CHECK_EVERY units apart, never more than the cap.
    gaps = [b - a for a, b in zip(checks, checks[1:])]
    assert gaps and min(gaps) >= CHECK_EVERY and max(gaps) <= MAX_CHECK_GAP
    check_seconds = watch.schedule.check_seconds
    assert check_seconds is not None
    assert collector.detection["growth"] is False


def test_a_process_sample_did_not_pick_is_never_traced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(WatchPhase, "counters_grow", lambda self: True)
    recorder = Recorder()
    collector = _unit_collector(recorder, may_trace=False)
    assert collector.watch is not None and collector.watch.window is None
    _drive(collector, WATCH_MIN_UNITS + 3 * CHECK_EVERY)
    assert set(recorder.phases()[2:]) == {"detect"}
    assert not tracemalloc.is_tracing()
    collector.close()


@pytest.mark.parametrize(("series", "grows"), [
    ([1000.0 + 5 * i for i in range(120)], True),                      # a leak keeps its pace
    ([1000.0] * 120, False),                                           # flat
    ([1000.0 + 50 * min(i, 60) + 0.01 * i for i in range(120)], False),  # warm-up dying away
])
def test_the_watch_rule_reads_the_later_half(series: list[float], grows: bool) -> None:
    collector = _unit_collector(Recorder())
    watch = collector.watch
    assert watch is not None
    watch.series.blocks.extend(series)
    del watch.series.malloc[:]  # no malloc series: the rule reads the blocks alone
    collector.measured = len(series)
    assert watch.counters_grow() is grows
    assert collector.detection["after_units"] == len(series)


CLEAN_CELERY = json.loads((Path(__file__).parent.parent / "data" / "celery_clean_blocks.json")
                          .read_text())


def _windows(series: list[float], every: int, decide: str) -> int | None:
    """The unit at which a watched process whose counters read ``series`` (a point
    every ``every`` units) opens its window, deciding by ``decide`` ("growth_confirmed",
    or "counters_grow": the rule's first sign alone) at each check; None: never."""
    collector = _unit_collector(Recorder())
    watch = collector.watch
    assert watch is not None
    watch.spacing.gap = every
    del watch.series.malloc[:]  # the blocks alone
    for units in range(WATCH_MIN_UNITS, len(series) * every, CHECK_EVERY):
        watch.series.blocks[:] = array("d", series[:units // every])
        collector.measured = units
        if getattr(watch, decide)():
            return units
    return None


def test_a_frameworks_own_fill_opens_no_window_where_a_leak_does() -> None:
    """Ten clean Celery pool children's block counts, as measured: the rule's first sign
    of growth alone opens windows on some of them (a fill can rise as steadily as a
    leak for a few hundred tasks); confirmed over as many units again, on none. A leak
    added to each of them is confirmed: 8 blocks a unit by the 200th unit, 2 by the
    600th, 1 by the 1,400th."""
    every = CLEAN_CELERY["every"]
    clean = [[float(v) for v in series] for series in CLEAN_CELERY["series"]]
    fooled = [_windows(series, every, "counters_grow") for series in clean]
    assert sum(at is not None for at in fooled) >= 3, fooled
    assert [_windows(series, every, "growth_confirmed") for series in clean] == [None] * 10
    for rate, by in ((8, 200), (2, 600), (1, 1400)):
        opened = [_windows([v + rate * every * i for i, v in enumerate(series)], every,
                           "growth_confirmed") for series in clean]
        assert all(at is not None and at <= by for at in opened), (rate, opened)


def test_growth_suspected_is_confirmed_at_twice_the_units_whatever_the_checks_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Units of a few microseconds space the rule's checks MAX_CHECK_GAP apart; the
    confirming check still falls at twice the units of the suspicion."""
    def grows(self: WatchPhase) -> bool:
        self.engine.detection = {"blocks_growth": True, "native_growth": False,
                                 "blocks_rate": 1.0, "malloc_rate": None}
        return True

    confirming: list[int] = []

    def kept(self: WatchPhase, suspicion: Any) -> bool:
        confirming.append(self.engine.measured)
        return True

    monkeypatch.setattr(WatchPhase, "counters_grow", grows)
    monkeypatch.setattr(WatchPhase, "kept_pace", kept)
    collector = _unit_collector(Recorder())
    collector.begin()
    try:
        while collector.phase is not collector.traced_phase and collector.measured < 1000:
            collector.end_loop()
        assert collector.watch is not None
        assert collector.watch.schedule.gap == MAX_CHECK_GAP  # cheap units: checks far apart
        assert confirming == [2 * WATCH_MIN_UNITS]
        assert collector.phase is collector.traced_phase
    finally:
        collector.close()


@pytest.mark.parametrize(("locator", "detection", "wanted"), [
    ("auto", {"growth": True, "native_growth": False}, False),  # Python objects grew
    ("auto", {"growth": True, "native_growth": True}, True),    # malloc's bytes grew
    ("auto", {"picked": True, "after_units": 0}, False),         # --sample K's pick
    ("memray", {"growth": True, "native_growth": False}, True),  # asked for: always
])
def test_a_window_runs_memray_by_default_only_for_malloc_growth(
    locator: str, detection: dict[str, Any], wanted: bool,
) -> None:
    collector = _unit_collector(Recorder(), locator=locator)
    collector.detection = detection
    assert collector.traced_phase.wants_memray() is wanted


def test_the_watch_rule_says_which_counter_grew() -> None:
    collector = _unit_collector(Recorder())
    watch = collector.watch
    assert watch is not None
    if not counters.has_malloc_counter():
        pytest.skip("this libc has no malloc counter")
    units = WATCH_MIN_UNITS
    watch.series.blocks.extend(1000.0 for _ in range(units))
    watch.series.malloc.extend(50_000.0 + 1024 * u for u in range(units))
    collector.measured = units
    assert watch.counters_grow()
    assert collector.detection["native_growth"] is True
    watch.series.blocks[:] = array("d", (1000.0 + 4 * u for u in range(units)))
    watch.series.malloc[:] = array("d", (50_000.0 for _ in range(units)))
    assert watch.counters_grow()
    assert collector.detection["native_growth"] is False


def test_a_window_closes_after_its_units_and_the_process_watches_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fork, "fork_copy", lambda: None)  # described here, not in a copy
    recorder = Recorder()
    collector = _unit_collector(recorder, trace_first=True, trace_units=40)
    window = collector.traced_phase
    assert isinstance(window, UnitTracedPhase) and window.window_units == 40
    collector.begin()
    for _ in range(2 + 39):
        collector.end_loop()
        assert collector.phase is window or collector.index <= 2
    assert tracemalloc.is_tracing() and collector.traced == 39
    collector.end_loop()  # the 40th traced unit
    assert collector.phase is collector.watch
    assert not tracemalloc.is_tracing()
    assert ("phase", ("detect", {"after_traced_units": 40})) in recorder.events
    assert ("window", ["end", "holders"]) in recorder.events
    for _ in range(5):
        collector.end_loop()
    assert recorder.phases() == ["warmup"] * 2 + ["locate"] * 40 + ["detect"] * 5
    # A picked process announces measuring, then its window at once.
    assert recorder.events[:2] == [
        ("measuring", 2), ("phase", ("locate", {"picked": True, "after_units": 0}))]
    assert collector.watch is not None and collector.watch.window is None  # one window only
    final = collector.close()
    assert final["mode"] == "fast" and collector.close() == {}


def test_a_windows_diffs_are_spaced_over_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window of 60 traced units reads its lines at least every sixth unit, as the
    tenth of its length asks, not every one of its first 20 units (the open-ended rule:
    a tenth of the units so far), which took 35 full reads of the traces in a Celery
    pool child's window, at 5-7 ms each."""
    monkeypatch.setattr(fork, "fork_copy", lambda: None)  # described here, not in a copy
    collector = _unit_collector(Recorder(), trace_first=True, trace_units=60)
    reads: list[int] = []
    real = collector.line_totals

    def counted(last: bool = False) -> Any:
        reads.append(collector.traced)
        return real(last)

    monkeypatch.setattr(collector, "line_totals", counted)
    try:
        _drive(collector, 2 + 60)
        assert collector.phase is collector.watch  # the window is over
    finally:
        collector.close()
    # The schedule's, and those a walk's checkpoint forces (the unit before and after
    # the walks at 10 and 30, where other threads allocate) and the first.
    gaps = [b - a for a, b in zip(reads, reads[1:])]
    assert len(reads) <= 60 // WORKER_MIN_STEPS + 7, reads  # 33 before
    assert max(gaps) <= 60 // WORKER_MIN_STEPS, reads


def test_sample_one_traces_every_unit_to_the_exit() -> None:
    recorder = Recorder()
    collector = _unit_collector(recorder, sample=1)
    assert collector.watch is None and collector.settings.mode == "full"
    assert _drive(collector, 300, keep=1) == 300  # a worker's collector never ends a run
    assert recorder.phases() == ["warmup"] * 2 + ["measure"] * 298
    assert recorder.events[0] == ("measuring", 2)
    final = collector.close()
    assert final["measured_loops"] == 298 and "gc_final" in final
    assert collector.diffs.skipped == 0  # the last cheap units' lines were flushed


def test_worker_checkpoints_are_dense_early_and_spare_the_window_end() -> None:
    schedule = CheckpointSchedule(every=100, window=60)
    assert [n for n in range(0, 301) if n in schedule] == [0, 10, 30]
    open_ended = CheckpointSchedule(every=100)
    assert [n for n in range(0, 301) if n in open_ended] == [0, 10, 30, 60, 100, 200, 300]


class OrderedRecorder(Recorder):
    """A Recorder that also notes each loop among the events, to see what came when."""

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: list[tuple[int, dict[str, Any]]] = []

    def on_loop(self, loop: dict[str, Any], changes: list[tuple[str, int, int, int]]) -> None:
        super().on_loop(loop, changes)
        self.events.append(("loop", loop["index"]))

    def on_checkpoint(self, loops_done: int, observation: dict[str, Any]) -> None:
        super().on_checkpoint(loops_done, observation)
        self.checkpoints.append((loops_done, observation))


def test_a_workers_walks_run_in_copies_it_does_not_wait_for() -> None:
    """A real worker's checkpoint walk (0.2-0.3 s a walk in a Celery pool child, the
    worker stalled meanwhile) runs in a forked copy while the worker serves: its
    lengths arrive some units later, recorded at the unit the walk was taken. The
    walk that makes three is waited for, so that its growers are described and their
    line located in the next unit however short the run."""
    from leakscope.heap.probe import HolderProbe

    module = types.ModuleType("async_walk_worker")
    module.REGISTRY = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        recorder = OrderedRecorder()
        probe = HolderProbe()
        collector = UnitCollector(Settings(warmup=2, holders=True, sample=1, frames=5),
                                  recorder, probe)
        collector.begin()
        try:
            for _ in range(2 + 40):
                module.REGISTRY.append({"n": len(module.REGISTRY)})  # type: ignore[attr-defined]
                time.sleep(0.001)  # a unit's work
                collector.end_loop()
        finally:
            collector.close()
        taken = [loops_done for loops_done, _ in recorder.checkpoints]
        # Walks at 0, 10 and 30 traced units (loops 2, 12, 32), each recorded there.
        assert taken[:3] == [2, 12, 32], taken
        first, second, third = (observation for _, observation in recorder.checkpoints[:3])
        assert first["forked"] and first["waited"] is False
        assert second["forked"] and second["waited"] is False
        assert "waited" not in third  # taken in the unit, as before
        events = recorder.events
        for loops_done in taken[:2]:  # the worker went on before the answer came
            at = events.index(("checkpoint", loops_done))
            assert ("loop", loops_done) in events[:at], (loops_done, events[:at][-3:])
        at = events.index(("checkpoint", 32))
        assert ("loop", 32) not in events[:at]
        growing = probe.snapshot()["growing"]
        registry = growing.get("async_walk_worker.REGISTRY")
        assert registry is not None, sorted(growing)
        assert registry["grown_at_stack"], registry  # located in the unit after the third
    finally:
        del sys.modules[module.__name__]


def test_a_windows_third_walk_and_description_answer_while_it_serves() -> None:
    """A window with units to spare after its third walk waits neither for that walk
    (0.08 s in a Celery pool child) nor for the description of its growers (0.14 s,
    a traced walk in a copy): both answer some units later, and the locator follows
    the unit after that, before the window closes."""
    from leakscope.heap.probe import HolderProbe

    module = types.ModuleType("async_describe_worker")
    module.REGISTRY = []  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        recorder = OrderedRecorder()
        probe = HolderProbe()
        collector = UnitCollector(
            Settings(warmup=2, holders=True, sample=0, frames=5, trace_units=60),
            recorder, probe, trace_first=True)
        collector.begin()
        try:
            for _ in range(2 + 60):
                module.REGISTRY.append({"n": len(module.REGISTRY)})  # type: ignore[attr-defined]
                # A unit's work: long enough for a copy walking this test process's
                # heap (the whole suite's modules) to answer within a few units.
                time.sleep(0.015)
                collector.end_loop()
            assert collector.phase is collector.watch  # the window closed
        finally:
            collector.close()
        taken = [loops_done for loops_done, _ in recorder.checkpoints]
        assert taken[:3] == [2, 12, 32], taken
        third = recorder.checkpoints[2][1]
        assert third["forked"] and third["waited"] is False
        events = recorder.events
        at = events.index(("checkpoint", 32))
        assert ("loop", 32) in events[:at]  # the worker went on before it answered
        described = [i for i, event in enumerate(events) if event[0] == "holders"
                     and "async_describe_worker.REGISTRY" in event[1]["growing"]
                     and event[1]["growing"]["async_describe_worker.REGISTRY"].get("role")]
        assert described, [e for e in events if e[0] == "holders"][-1]
        assert described[0] > at + 1  # not in the unit that took the third walk
        registry = probe.snapshot()["growing"]["async_describe_worker.REGISTRY"]
        assert registry["grown_at_stack"], registry  # located before the window closed
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize(("read_cost", "gap"), [(0.0001, 3), (0.00001, 1), (0.01, MAX_COUNTER_GAP)])
def test_counters_are_read_within_their_share(read_cost: float, gap: int) -> None:
    """Reads of allocated blocks and malloc (40-70 µs each in a Celery pool child) take at
    most COUNTER_SHARE of a 2 ms unit, evenly spaced, once their cost is known."""
    spacing = CounterSpacing()
    reads = []
    for _ in range(COUNTER_SPACING_READS + 10 * gap):
        read = spacing.read_now()
        reads.append(read)
        spacing.observe(0.002, read_cost if read else None)
    assert all(reads[:COUNTER_SPACING_READS])  # measured first
    later = [i for i, read in enumerate(reads) if read and i >= COUNTER_SPACING_READS - 1]
    assert {b - a for a, b in zip(later, later[1:])} == {gap}  # evenly spaced


def _watched_until_window(monkeypatch: pytest.MonkeyPatch, read_cost: float
                          ) -> tuple[UnitCollector, dict[str, Any]]:
    """A watched process that keeps 8 small objects a unit, until its window opens;
    each counters' read "costs" ``read_cost`` of a 2 ms unit."""
    collector = _unit_collector(Recorder())
    watch = collector.watch
    assert watch is not None
    spacing = watch.spacing
    monkeypatch.setattr(spacing, "observe", lambda unit, read: CounterSpacing.observe(
        spacing, 0.002, None if read is None else read_cost))
    collector.begin()
    kept = []
    try:
        while collector.phase is not collector.traced_phase and collector.measured < 2000:
            kept.extend(object() for _ in range(8))
            collector.end_loop()
        assert collector.phase is collector.traced_phase, collector.detection
        return collector, dict(collector.detection)
    finally:
        collector.close()


def test_a_watched_leak_is_detected_at_its_rate_per_unit_with_spaced_counters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch rule reading the counters every third unit opens the window on the same
    leak, at the same rate per unit, as reading them every unit; its series holds only
    points three units apart."""
    every, every_detection = _watched_until_window(monkeypatch, 0.000001)
    spaced, spaced_detection = _watched_until_window(monkeypatch, 0.0001)
    assert every.watch is not None and spaced.watch is not None
    assert (every.watch.spacing.gap, spaced.watch.spacing.gap) == (1, 3)
    assert spaced_detection["blocks_rate"] == pytest.approx(
        every_detection["blocks_rate"], rel=0.15), (every_detection, spaced_detection)
    assert len(spaced.watch.series) <= spaced.measured // 3 + 2


def test_a_watched_process_reads_its_counters_every_few_units(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watched process's units carry RSS and time, and the counters every few units,
    evenly spaced, once their cost is known (here: --sample K left it out)."""
    recorder = Recorder()
    collector = _unit_collector(recorder, may_trace=False)
    watch = collector.watch
    assert watch is not None
    spacing = watch.spacing
    # Each read "costs" 100 µs of a 2 ms unit: a gap of 3 for a 2% share.
    monkeypatch.setattr(spacing, "observe", lambda unit, read: CounterSpacing.observe(
        spacing, 0.002, None if read is None else 0.0001))
    _drive(collector, 2 + COUNTER_SPACING_READS + 30)
    collector.close()
    detect = [loop for loop in recorder.loops if loop["phase"] == "detect"]
    read = [loop["index"] for loop in detect if loop["allocated_blocks"] is not None]
    assert all(loop["rss_bytes"] for loop in detect)
    later = read[COUNTER_SPACING_READS - 1:]  # from the last read of every unit
    assert len(later) > 5 and {b - a for a, b in zip(later, later[1:])} == {3}, read
    # The rule's series: the reads on that grid, the first units' too.
    assert len(watch.series) == len([i for i in read if (read[-1] - i) % 3 == 0])
