"""Processes started plainly (no leakscope anywhere near them) for `leakscope attach`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from leakscope.drive import attach
from tests.conftest import ROOT, need_program

TICK_WORKER = ROOT / "scenarios" / "attach" / "tick_worker.py"


def need_ptrace() -> None:
    """Skip, saying why, where this machine forbids what attach needs."""
    need_program("gdb", shutil.which("gdb"))
    scope = None
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text()
    except OSError:
        pass
    reason = attach.ptrace_refusal(scope, attach._has_cap_ptrace(), False)
    if reason is not None:
        print(f"skipped: ptrace not permitted: {reason}")
        pytest.skip(f"ptrace not permitted: {reason}")


class TickWorker:
    """scenarios/attach/tick_worker.py as its own plain process, with its status lines."""

    def __init__(self, directory: Path, mode: str, seconds: float | None = None) -> None:
        self.status_path = directory / f"status-{mode}.jsonl"
        argv = [sys.executable, str(TICK_WORKER), str(self.status_path), mode]
        if seconds is not None:
            argv.append(str(seconds))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        self.proc = subprocess.Popen(argv, cwd=directory, env=env)
        self.wait_status(1)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def statuses(self) -> list[dict]:
        try:
            lines = self.status_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_status(self, count: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.statuses()
            if len(found) >= count:
                return found[-1]
            assert self.proc.poll() is None, "the worker died"
            time.sleep(0.05)
        raise AssertionError("the worker wrote no status")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tick_worker(tmp_path):
    workers: list[TickWorker] = []

    def start(mode: str = "leak", seconds: float | None = None) -> TickWorker:
        need_ptrace()
        worker = TickWorker(tmp_path, mode, seconds)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
