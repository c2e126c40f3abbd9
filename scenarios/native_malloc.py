"""A C extension that leaks: 1 KiB ``malloc``'d through ctypes per loop and never freed.

tracemalloc sees nothing (the memory is outside Python's allocators); the C
heap and RSS grow. Kind native.

Expected: leak=yes kind=native line=-
"""

from __future__ import annotations

import ctypes
import ctypes.util

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]


def iteration() -> None:
    libc.malloc(1024)  # the leak: no free()
