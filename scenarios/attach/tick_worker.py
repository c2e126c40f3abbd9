"""A plain worker loop that knows nothing of leakscope, for `leakscope attach` tests.

Usage: python tick_worker.py STATUS_PATH [leak|clean] [SECONDS]

Every pass does a little work (and, with ``leak``, keeps a buffer in a
module-level list); about five times a second it writes one JSON line to
STATUS_PATH saying what a visitor may have left in it: leakscope modules,
tracemalloc, a private path on sys.path, threads, its RSS. With SECONDS it
exits after that long.

Expected: leak=yes kind=reachable line=scenarios/attach/tick_worker.py:28
Holder: tick_worker.KEPT
"""

import json
import os
import sys
import threading
import time
import tracemalloc

KEPT = []


def work(leak):
    scratch = [str(i) for i in range(50)]
    if leak:
        KEPT.append(bytearray(3000))
    return len(scratch)


def status():
    # os.open, not open(): on CPython 3.11 each open() of a /proc file keeps a few
    # bytes for good, which a clean worker must not show as its growth.
    fd = os.open("/proc/self/statm", os.O_RDONLY)
    try:
        rss = int(os.read(fd, 200).split()[1]) * 4096
    finally:
        os.close(fd)
    return {
        "leakscope": sorted(n for n in sys.modules if n.split(".")[0] == "leakscope"),
        "tracing": tracemalloc.is_tracing(),
        "private_path": [p for p in sys.path if "leakscope-path-" in p],
        "threads": sorted(t.name for t in threading.enumerate()),
        "rss": rss,
        "kept": len(KEPT),
        "main_keys": sorted(k for k in vars(sys.modules["__main__"]) if not k.startswith("__")),
    }


def main():
    path, mode = sys.argv[1], sys.argv[2]
    ends = time.monotonic() + float(sys.argv[3]) if len(sys.argv) > 3 else None
    last = 0.0
    while ends is None or time.monotonic() < ends:
        work(mode == "leak")
        time.sleep(0.01)
        if time.monotonic() - last > 0.2:
            last = time.monotonic()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (json.dumps(status()) + "\n").encode())
            finally:
                os.close(fd)


if __name__ == "__main__":
    main()
