"""`leakscope attach --children` to a Celery prefork pool started plainly on a real Redis:
every pool child measured per task, combined as `leakscope run` combines them."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.attach.conftest import need_ptrace
from tests.conftest import ROOT, load_json, run_cli
from tests.workers.conftest import redis_server, redis_url  # noqa: F401 - fixtures

CELERY = ROOT / ".venv" / "bin" / "celery"


def pool_children(master: int, count: int) -> list[int]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if len(found) >= count:
            return [int(pid) for pid in found]
        time.sleep(0.2)
    raise AssertionError("the pool did not start")


def test_celery_pool_attached_with_children(redis_url, tmp_path):  # noqa: F811
    need_ptrace()
    from celery import Celery

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LEAKSCOPE_BROKER"] = redis_url
    master = subprocess.Popen(
        [str(CELERY), "-A", "celery_leak", "worker", "--pool=prefork", "--concurrency=2",
         "-O", "fair", "--loglevel=WARNING"],
        cwd=ROOT / "scenarios" / "workers", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = Celery(broker=redis_url)
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            client.send_task("celery_leak.handle", args=[n], ignore_result=True)
            n += 1
            time.sleep(0.004)

    sender = threading.Thread(target=send)
    try:
        children = pool_children(master.pid, 2)
        sender.start()
        out = tmp_path / "run.json"
        proc = run_cli("attach", "--children", str(master.pid), "--units", "300",
                       "--sample", "1", "--json", str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        run = load_json(out)
        pids = sorted(p["process"]["pid"] for p in run["processes"])
        assert pids == sorted(children)
        assert {p["process"]["role"] for p in run["processes"]} == {"celery pool child"}
        assert run["unit"] == "task"
        assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable"
        assert run["holders"][0]["path"] == "celery_leak.Signals.on_order_paid"
        # Left as they were: still the same children, still working (the queue drains).
        stop.set()
        sender.join()
        from redis import Redis

        queue = Redis.from_url(redis_url)
        deadline = time.monotonic() + 60
        while queue.llen("celery") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue.llen("celery") == 0
        assert pool_children(master.pid, 2) == children
        assert master.poll() is None
        for pid in children:
            assert len(os.listdir(f"/proc/{pid}/task")) >= 1
            assert "TracerPid:\t0" in Path(f"/proc/{pid}/status").read_text()
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=60)
