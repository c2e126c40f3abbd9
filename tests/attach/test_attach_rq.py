"""`leakscope attach` to an RQ SimpleWorker started plainly: one unit per job, through the
hook attach installs on the worker classes' ``execute_job`` and takes off when it leaves."""

from __future__ import annotations

import os
import subprocess
import threading
import time

from tests.attach.conftest import need_ptrace
from tests.conftest import ROOT, load_json, run_cli
from tests.workers.conftest import redis_server, redis_url  # noqa: F401 - fixtures

RQ = ROOT / ".venv" / "bin" / "rq"


def test_rq_simple_worker_attached_and_left(redis_url, tmp_path):  # noqa: F811
    need_ptrace()
    from redis import Redis
    from rq import Queue

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    worker = subprocess.Popen(
        [str(RQ), "worker", "--worker-class", "rq.SimpleWorker", "--url", redis_url,
         "--path", str(ROOT / "scenarios" / "workers")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    queue = Queue(connection=Redis.from_url(redis_url))
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            queue.enqueue("rq_simple_leak.handle", n)
            n += 1
            time.sleep(0.05)  # slower than the traced worker takes them

    sender = threading.Thread(target=send)
    try:
        for n in range(20):  # the worker imports the job's module with its first job
            queue.enqueue("rq_simple_leak.handle", -1 - n)
        deadline = time.monotonic() + 30
        while queue.count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue.count == 0, "the rq worker did not start"
        threads = len(os.listdir(f"/proc/{worker.pid}/task"))
        sender.start()
        out = tmp_path / "run.json"
        proc = run_cli("attach", str(worker.pid), "--units", "100", "--json", str(out),
                       cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        run = load_json(out)
        assert run["unit"] == "job"
        assert run["processes"][0]["process"]["role"] == "rq simple worker"
        assert run["verdict"]["leak"] is True and run["verdict"]["kind"] == "reachable"
        assert run["holders"][0]["path"] == "rq_simple_leak.AUDIT"
        lines = [f"{s['user_frame']['file']}:{s['user_frame']['line']}"
                 for s in run["sites"] if s.get("user_frame")]
        assert any(line.endswith("rq_simple_leak.py:16") for line in lines[:3]), lines
        # Left: the worker goes on taking jobs, and the hook is off its class.
        stop.set()
        sender.join()
        deadline = time.monotonic() + 60
        while queue.count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue.count == 0 and worker.poll() is None
        # leakscope's thread is gone
        assert len(os.listdir(f"/proc/{worker.pid}/task")) == threads
    finally:
        stop.set()
        if sender.is_alive():
            sender.join()
        # Its health was checked above; rq 3.0's warm shutdown (SIGTERM) can hang on its
        # pubsub thread with or without leakscope, so it is stopped cold.
        worker.kill()
        worker.wait(timeout=30)
