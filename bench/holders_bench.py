"""Holder search cost on a big heap: one whole run with and without the search.

The worker builds 1,000,000 live objects in setup() (module-level lists and
dicts, the shapes real workers keep) and leaks one registry entry per loop.
The figure is the extra wall time the search adds to a whole `leakscope
trace` run, and the walk time the run file records.

    .venv/bin/python bench/holders_bench.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

WORKER = textwrap.dedent(
    '''
    import itertools

    BIG_LIST = []
    BIG_DICT = {}
    ROWS = {}
    _ids = itertools.count()


    class Registry:
        entries = {}


    def setup():
        # 1,000,000 objects: 200,000 tuples of 3 items + 200,000 dict entries.
        for i in range(200_000):
            BIG_LIST.append((i, f"name-{i}", float(i)))
        for i in range(200_000):
            BIG_DICT[f"key-{i}"] = [i]
        for i in range(100):
            ROWS[i] = {"id": i, "tags": [str(i)]}


    def iteration():
        Registry.entries[next(_ids)] = object()
    '''
)


def run(worker: Path, out: Path, holders: bool) -> tuple[float, dict]:
    args = [sys.executable, "-m", "leakscope", "trace", str(worker), "--quiet",
            "--iterations", "50", "--json", str(out)]
    if not holders:
        args.append("--no-holders")
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - started, json.loads(out.read_text())


def main() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        worker = Path(tmp) / "big_heap_worker.py"
        worker.write_text(WORKER)
        out = Path(tmp) / "run.json"
        without, _ = run(worker, out, holders=False)
        with_search, data = run(worker, out, holders=True)
    search = data["observations"].get("holder_search", {})
    holder = data["holders"][0]["path"] if data["holders"] else None
    result = {
        "live_objects": 1_000_000,
        "whole_run_without_search_s": round(without, 2),
        "whole_run_with_search_s": round(with_search, 2),
        "extra_s": round(with_search - without, 2),
        "walk_seconds_total": search.get("walk_seconds"),
        "checkpoints": search.get("checkpoints"),
        "max_objects_visited": search.get("max_visited"),
        "holder_found": holder,
    }
    for key, value in result.items():
        print(f"{key:30} {value}")
    return result


if __name__ == "__main__":
    main()
