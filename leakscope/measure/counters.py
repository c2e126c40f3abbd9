"""Cheap per-loop process figures that need no tracing: RSS, glibc heap, gc.

Each read costs microseconds whatever the size of the heap, so they can be
taken every loop (and, in fast mode, instead of tracemalloc).
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]


def _load_mallinfo2():
    """glibc's mallinfo2() (2.33+), or None where the platform lacks it.

    Looked up among the symbols the process already has (libc is loaded in
    every Python), not with ``ctypes.util.find_library``: that runs ``ldconfig``
    in a subprocess inside the measured worker and imports 3 MiB of modules
    (subprocess, shutil, tempfile) that `leakscope attach` would leave behind.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        func = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    func.restype = _Mallinfo2
    func.argtypes = []
    return func


_mallinfo2 = _load_mallinfo2()
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
# Per process: a forked child must read its own figures, not its parent's
# (psutil.Process and an open /proc/self file both stay bound to one pid).
# psutil is imported only where /proc is missing: on Linux a measured process
# loads nothing but the standard library and leakscope's own modules.
_process: tuple[int, Any] | None = None
_statm: tuple[int, int] | None = None


def rss_bytes() -> int:
    """Resident set size of this process, now."""
    global _statm, _process
    pid = os.getpid()
    if sys.platform.startswith("linux"):
        try:
            if _statm is None or _statm[0] != pid:
                if _statm is not None:
                    os.close(_statm[1])
                _statm = (pid, os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC))
            # statm is "size resident shared ...": the second number, read
            # with as few new objects as possible (this runs under tracemalloc).
            data = os.pread(_statm[1], 128, 0)
            start = data.index(b" ") + 1
            return int(data[start:data.index(b" ", start)]) * _PAGE
        except (OSError, ValueError, IndexError):
            pass
    if _process is None or _process[0] != pid:
        import psutil

        _process = (pid, psutil.Process(pid))
    return _process[1].memory_info().rss


def malloc_in_use() -> int | None:
    """Bytes the C allocator has handed out and not had back (glibc only).

    Far finer than RSS, which moves in whole pages: a C extension that keeps
    100 bytes per loop shows here at once and in RSS only after ~40 loops.
    """
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd)


def malloc_read() -> tuple[int, int] | None:
    """``malloc_in_use()`` and the bytes glibc's malloc holds from the system, in use or
    free, from one call (a loop that needs both pays for one ctypes structure, an
    allocation tracemalloc records).

    The second is what RSS can owe to malloc: free chunks it keeps after a burst
    (it returns only the top of its heap) count there but not in the first. RSS
    beyond it is memory mapped outside malloc: CPython's object arenas, an
    extension's own ``mmap``, thread stacks.
    """
    if _mallinfo2 is None:
        return None
    info = _mallinfo2()
    return int(info.uordblks + info.hblkhd), int(info.arena + info.hblkhd)


def has_malloc_counter() -> bool:
    return _mallinfo2 is not None


class GcCounter:
    """Counts collections the normal gc runs, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.collections = 0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "stop":
            self.collections += 1

    def __enter__(self) -> GcCounter:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            gc.callbacks.remove(self._callback)
        except ValueError:
            pass


TCACHE_OFF = "glibc.malloc.tcache_count=0"


def exact_malloc_tunables(existing: str | None) -> str:
    """GLIBC_TUNABLES for a traced process, with glibc's per-thread cache off.

    mallinfo2() counts chunks parked in the tcache as in use, so a worker
    that only churns seems to grow by a few hundred bytes a loop until the
    cache is full. With the tcache off, freed chunks go straight back to the
    bins and the counter is exact; the allocator is a little slower, which
    changes timings but not what the worker keeps.
    """
    setting = TCACHE_OFF
    if not existing:
        return setting
    if "glibc.malloc.tcache_count" in existing:
        return existing
    return f"{existing}:{setting}"
