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


def test_memrays_greenlet_warning_stays_out_of_the_workers_stderr(tmp_path) -> None:
    """A worker that imported greenlet (Celery's does): memray prints a warning to
    sys.stderr when its Tracker starts. The worker's stderr is the worker's: the warning
    is left out, and whatever else is written meanwhile still reaches it."""
    import subprocess
    import textwrap

    import pytest

    pytest.importorskip("memray")
    pytest.importorskip("greenlet")
    code = textwrap.dedent(f"""
        import sys
        import greenlet, memray
        from leakscope.measure.memray_window import _enter_from_helper_thread
        tracker = memray.Tracker({str(tmp_path / "capture.bin")!r})
        assert _enter_from_helper_thread(tracker) is None
        tracker.__exit__(None, None, None)
        print("worker's own line", file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "worker's own line\n"
