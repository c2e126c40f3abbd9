"""The memray window's helper thread is gone before the worker's next loop."""

from __future__ import annotations

import sys
import time

from leakscope.measure.memray_window import _enter_from_helper_thread


class SlowTracker:
    """Stands for memray's Tracker: its start takes a moment, on the helper thread."""

    def __enter__(self) -> SlowTracker:
        time.sleep(0.001)
        return self


def test_the_helper_thread_has_ended_when_the_tracker_has_started() -> None:
    """A helper still alive when the loop ends is counted as one of the worker's threads,
    and other threads allocating make a growth "undecided" (check called
    sqs_cycles_gc_disabled undecided about one run in ten)."""
    before = set(sys._current_frames())
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as soon as the helper lets go
    try:
        for _ in range(200):
            assert _enter_from_helper_thread(SlowTracker()) is None
            assert set(sys._current_frames()) == before
    finally:
        sys.setswitchinterval(interval)


def test_a_failing_start_is_returned_not_raised() -> None:
    class Broken:
        def __enter__(self) -> None:
            raise RuntimeError("no tracker")

    failure = _enter_from_helper_thread(Broken())
    assert isinstance(failure, RuntimeError) and str(failure) == "no tracker"
