"""The memray locator's window, inside the measured process.

Fast mode's locate loops run under tracemalloc, which sees only Python's own
allocators: a C or Rust extension that keeps malloc'd memory per call shows
as kind ``native`` with no line. When memray is the locator, the same loops
also run under ``memray.Tracker`` with native stacks, writing an aggregated
capture into a directory the parent made for it; the parent reads the
allocations still alive when the window closed (``leakscope.measure.native_sites``)
and removes the file.

tracemalloc stays on in those loops: the counters, the traced floor, the
final collection's fates and the holder search are read from it as before,
so the verdict and its kind do not depend on memray. memray only adds where
native memory was allocated.

memray is imported here, and only here, when the window opens: a run whose
locator is tracemalloc, or whose counters show no growth, never loads it.
Nothing here calls the worker's code.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENGINES = ("tracemalloc", "memray")
# LEAKSCOPE_LOCATOR=tracemalloc forces the old engine; "auto" (the default)
# and "memray" use memray where the worker's interpreter can import it.
LOCATOR_ENV = "LEAKSCOPE_LOCATOR"
LOCATORS = ("auto", "memray", "tracemalloc")
CAPTURE_NAME = "memray-window.bin"
# Fewer tracemalloc frames than this beside an open memray window lose fast
# mode's kinds: with 3, scenarios/sqs_cycles_gc_disabled.py was called "no leak"
# in 3 runs of 3 (its cycles read as released); 5, 8 and 10 were right in every
# run. Below it, the run locates with tracemalloc alone and says so.
MIN_FRAMES = 5
# Whether memray also records pymalloc's allocations. With them, the Python
# stacks of what the window kept could give a short tracemalloc traceback its
# user line, so tracemalloc could run with 3 frames in the locate loops (the
# JSON churner's whole leaking fast run: 1.35x untraced instead of 2.3x). Off:
# measured with 3 frames, scenarios/sqs_cycles_gc_disabled.py in fast mode was
# called "no leak" (its cycles read as released), and holders' "made at" lines
# come from tracemalloc's own tracebacks. Native sites do not need it: malloc's
# own calls are what memray hooks either way.
PYTHON_ALLOCATORS = False


def locator_from_env(environ: dict[str, str] | None = None) -> str:
    """The locator asked for by ``LEAKSCOPE_LOCATOR`` (``auto`` when unset or unknown)."""
    value = (environ if environ is not None else os.environ).get(LOCATOR_ENV, "auto")
    value = value.strip().lower()
    return value if value in LOCATORS else "auto"


def _mapped_libraries() -> list[str]:
    """Files mapped executable into this process (Linux): where native functions live.

    The parent looks a native function's symbol up in these to name its
    library; the list is read once, as the window closes.
    """
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                parts = line.split(None, 5)
                if len(parts) == 6 and "x" in parts[1] and parts[5].startswith("/"):
                    path = parts[5].strip()
                    if path not in found:
                        found.append(path)
    except OSError:
        pass
    return found


# What memray prints to sys.stderr when it starts in a process that imported
# greenlet (Celery's workers do): its lines, told apart from the worker's own.
_GREENLET_WARNING = ("Memray support for Greenlet is experimental",
                     "report any issues at https://github.com/bloomberg/memray")


def _enter_quietly(tracker: Any) -> None:
    """``tracker.__enter__()``, memray's greenlet warning kept out of the worker's stderr.

    The stream is swapped only where the warning will come (greenlet imported),
    for the moment the Tracker starts; anything else written to it meanwhile
    (another thread of the worker's) is passed on to the real stream after, bar
    blank lines, which the warning ends with.
    """
    if "greenlet" not in sys.modules:
        tracker.__enter__()
        return
    import io

    real = sys.stderr
    caught = io.StringIO()
    sys.stderr = caught
    try:
        tracker.__enter__()
    finally:
        if sys.stderr is caught:
            sys.stderr = real
        lines = caught.getvalue().splitlines(keepends=True)
        theirs = [line for line in lines
                  if line.strip() and not any(mark in line for mark in _GREENLET_WARNING)]
        if theirs and real is not None:
            real.write("".join(theirs))


def _enter_from_helper_thread(tracker: Any) -> BaseException | None:
    """Start the Tracker from a short-lived thread; the exception if it failed.

    memray hides, on the thread that starts a Tracker, every Python frame
    older than the caller of ``__enter__``: started deep inside leakscope's
    ``end_loop``, that would hide the worker's whole stack (its loop runs
    shallower than our call). Started from another thread, the worker's
    thread keeps all its frames (leakscope's harness frames are cut when the
    capture is read, as for tracemalloc's tracebacks).
    """
    import threading  # the stdlib's; memray has imported it already

    outcome: list[BaseException | None] = []

    def enter() -> None:
        try:
            _enter_quietly(tracker)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    # Joined, not only waited for: a thread still alive when the loop ends
    # would be counted as the worker's own (other threads allocating make a
    # growth undecided).
    helper = threading.Thread(target=enter, name="leakscope-memray-start", daemon=True)
    helper.start()
    helper.join()
    return outcome[0] if outcome else RuntimeError("the Tracker's thread did not report")


class MemrayWindow:
    """One memray Tracker over a window of loops; ``open`` and ``close`` never raise."""

    def __init__(self, capture_dir: str) -> None:
        self.capture_dir = capture_dir
        self.path = os.path.join(capture_dir, f"{os.getpid()}-{CAPTURE_NAME}")
        self._tracker: Any = None
        self._pending: Any = None
        self.note = ""
        self.loops = 0
        # Loops counted by the window itself (full mode's native window, whose
        # loops are not traced ones); 0 when the caller counts them.
        self.counted = 0

    def prepare(self) -> bool:
        """Import memray and make the Tracker, before tracemalloc starts: its imports
        (memray, rich, its path helpers) must not show as the worker's allocations."""
        if not self.capture_dir or not os.path.isdir(self.capture_dir):
            self.note = "memray: no capture directory; located with tracemalloc"
            return False
        try:
            import memray
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install
            self.note = (f"memray is not importable by the worker's Python "
                         f"({type(exc).__name__}); located with tracemalloc")
            return False
        try:
            self._pending = memray.Tracker(
                self.path, native_traces=True, trace_python_allocators=PYTHON_ALLOCATORS,
                follow_fork=False, file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            )
        except Exception as exc:  # noqa: BLE001
            self.note = f"memray could not start ({exc}); located with tracemalloc"
            return False
        return True

    def open(self) -> bool:
        """Start tracking; False (with ``note`` saying why) when memray cannot run here."""
        tracker, self._pending = self._pending, None
        if tracker is None:
            return False
        failure = _enter_from_helper_thread(tracker)
        if failure is not None:
            text = str(failure).split("\n")[0]
            if "tracker" in text.lower() and "active" in text.lower():
                self.note = ("the worker already runs a memray Tracker (one per process); "
                             "located with tracemalloc")
            else:
                self.note = f"memray could not start ({text}); located with tracemalloc"
            try:
                os.unlink(self.path)
            except OSError:
                pass
            return False
        self._tracker = tracker
        return True

    @property
    def deep_stacks(self) -> bool:
        """Whether the capture will hold the Python stacks of Python's own allocations."""
        return PYTHON_ALLOCATORS

    @property
    def active(self) -> bool:
        return self._tracker is not None

    def count_loop(self) -> None:
        self.counted += 1

    def discard(self) -> None:
        """Stop tracking and remove the capture: nobody will read it."""
        tracker, self._tracker = self._tracker, None
        if tracker is not None:
            try:
                tracker.__exit__(None, None, None)
            except Exception:  # noqa: BLE001, S110 - leaving anyway
                pass
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def close(self, loops: int) -> dict[str, Any]:
        """Stop tracking after ``loops`` loops; what the parent needs to read the capture."""
        tracker, self._tracker = self._tracker, None
        if tracker is None:
            return {"engine": "tracemalloc", "note": self.note} if self.note else {}
        try:
            tracker.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001
            self.note = f"memray failed to stop ({exc}); located with tracemalloc"
            return {"engine": "tracemalloc", "note": self.note}
        self.loops = self.counted or loops
        return {
            "engine": "memray", "capture": self.path, "loops": self.loops,
            "python_allocators": PYTHON_ALLOCATORS,
            "libraries": _mapped_libraries(), "executable": os.path.realpath(
                "/proc/self/exe") if os.path.exists("/proc/self/exe") else "",
        }
