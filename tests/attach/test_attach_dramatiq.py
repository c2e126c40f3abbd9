"""`leakscope attach --children` to a Dramatiq worker started plainly: one unit per message."""

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

DRAMATIQ = ROOT / ".venv" / "bin" / "dramatiq"


def test_dramatiq_worker_attached(redis_url, tmp_path):  # noqa: F811
    need_ptrace()
    from dramatiq import Message
    from dramatiq.brokers.redis import RedisBroker

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LEAKSCOPE_BROKER"] = redis_url
    master = subprocess.Popen(
        [str(DRAMATIQ), "dramatiq_leak", "--processes", "1", "--threads", "1",
         "--path", str(ROOT / "scenarios" / "workers")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    broker = RedisBroker(url=redis_url)
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            broker.enqueue(Message(queue_name="default", actor_name="handle", args=(n,),
                                   kwargs={}, options={}))
            n += 1
            time.sleep(0.005)

    sender = threading.Thread(target=send)
    try:
        time.sleep(3)  # the worker process imports the app and connects
        assert Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
        sender.start()
        out = tmp_path / "run.json"
        proc = run_cli("attach", "--children", str(master.pid), "--units", "120",
                       "--json", str(out), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        run = load_json(out)
        workers = [p for p in run["processes"] if p["process"]["role"] == "dramatiq worker"]
        assert len(workers) == 1 and workers[0]["unit"] == "message"
        assert run["verdict"]["leak"] is True
        assert run["holders"][0]["path"] == "dramatiq_leak.RESULTS"
        # Still working: the queue drains once nothing more is sent.
        stop.set()
        sender.join()
        from redis import Redis

        queue = Redis.from_url(redis_url)
        deadline = time.monotonic() + 60
        while queue.hlen("dramatiq:default.msgs") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue.hlen("dramatiq:default.msgs") == 0
        assert master.poll() is None
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=60)
