"""leakscope's forked copies run none of the worker's own handlers in the worker.

A heap walk, a description or the back-reference search runs in a copy of
the worker made by fork. ``os.fork()`` runs the worker's ``before`` and
``after_in_parent`` at-fork handlers in the worker itself: a library that
stops its background thread before a fork and starts a new one after
(gunicorn's control server does) had that done to it by every walk. Each
test's worker counts those calls, through the real CLI, and the copies prove
they forked by the ``after_in_child`` handler they run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_json, run_cli

COUNTING = '''
import os, sys

CALLS = {"before": 0, "after_in_parent": 0}
COPIES = os.environ["COPIES_FILE"]


def _copy_started():
    with open(COPIES, "a") as out:
        out.write(f"{os.getpid()}\\n")


os.register_at_fork(
    before=lambda: CALLS.__setitem__("before", CALLS["before"] + 1),
    after_in_parent=lambda: CALLS.__setitem__("after_in_parent", CALLS["after_in_parent"] + 1),
    after_in_child=_copy_started,
)

KEPT = {}


def iteration():
    KEPT[len(KEPT)] = bytearray(256)


def teardown():
    import json
    with open(os.environ["CALLS_FILE"], "w") as out:
        json.dump(CALLS, out)
'''

RUN_MAIN = '''

if __name__ == "__main__":
    import leakscope
    for _ in range(400):
        iteration()
        leakscope.tick()
    teardown()
'''


def _env(tmp_path: Path) -> dict[str, str]:
    return {"CALLS_FILE": str(tmp_path / "calls.json"),
            "COPIES_FILE": str(tmp_path / "copies.txt")}


def _assert_untouched(tmp_path: Path) -> None:
    calls = json.loads((tmp_path / "calls.json").read_text())
    assert calls == {"before": 0, "after_in_parent": 0}, calls
    copies = (tmp_path / "copies.txt").read_text().split()
    assert copies, "no copy was forked: the test proves nothing"


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_trace_forks_its_copies_without_the_workers_handlers(tmp_path, mode):
    (tmp_path / "counting.py").write_text(COUNTING)
    out = tmp_path / "run.json"
    proc = run_cli("trace", "counting.py", "--quiet", "--json", str(out),
                   *(["--fast"] if mode == "fast" else []), cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    assert run["verdict"]["leak"] and run["holders"], run["verdict"]["summary"]
    _assert_untouched(tmp_path)


def test_run_forks_its_copies_without_the_workers_handlers(tmp_path):
    worker = tmp_path / "counting.py"
    worker.write_text(COUNTING + RUN_MAIN)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--json", str(out), "--", sys.executable, str(worker),
                   cwd=tmp_path, env=_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = load_json(out)
    assert run["verdict"]["leak"], run["verdict"]["summary"]
    assert run["processes"][0]["process"]["traced_units"], "no window: no copy to fork"
    _assert_untouched(tmp_path)


def test_the_copy_runs_the_childs_handlers_and_the_worker_none(tmp_path):
    """fork_copy itself, in a fresh interpreter with threads contending for the GIL
    (where a fork by ctypes left copies waiting forever on the GIL)."""
    script = tmp_path / "forks.py"
    script.write_text(f'''
import json, os, select, sys, threading
sys.path.insert(0, {str(ROOT)!r})
from leakscope.heap.fork import fork_copy

calls = []
os.register_at_fork(before=lambda: calls.append("before"),
                    after_in_parent=lambda: calls.append("parent"),
                    after_in_child=lambda: calls.append("child"))
# Threads waiting for the GIL ask for it after the switch interval: at 10 us, during
# every fork; a copy that ran bytecode before the interpreter's after-fork reset then
# waited forever for a thread it does not have (a fork by ctypes: 30 stuck in 30).
sys.setswitchinterval(1e-5)
pages = [bytearray(4096) for _ in range(5_000)]
stop = False

def spin():
    while not stop:
        pass

threads = [threading.Thread(target=spin, daemon=True) for _ in range(3)]
for thread in threads:
    thread.start()
seen, stuck = [], 0
for _ in range(30):
    read_fd, write_fd = os.pipe()
    pid = fork_copy()
    if pid == 0:
        os.write(write_fd, json.dumps(calls).encode())
        os._exit(0)
    os.close(write_fd)
    if select.select([read_fd], [], [], 5.0)[0]:
        seen.append(json.loads(os.read(read_fd, 1 << 16)))
    else:
        stuck += 1
        os.kill(pid, 9)
    os.close(read_fd)
    os.waitpid(pid, 0)
stop = True
ours = list(calls)
pid = os.fork()  # the worker's own fork still runs its handlers
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print(json.dumps({{"parent": ours, "copy": seen[-1] if seen else None, "stuck": stuck,
                  "own_fork": calls[len(ours):]}}))
''')
    import subprocess

    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result == {"parent": [], "copy": ["child"], "stuck": 0,
                      "own_fork": ["before", "parent"]}, result
