"""The agent in a process of its own: forks, inherited traces, integrations armed only on import."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from leakscope.drive.launcher import agent_env
from leakscope.model.settings import Settings
from tests.conftest import load_json, run_cli

FORKING = textwrap.dedent(
    """
    import os
    import leakscope

    KEPT = []
    for i in range(30):           # the parent leaks 200 KiB per unit
        KEPT.append(bytearray(200 * 1024))
        leakscope.tick()
    pid = os.fork()
    if pid == 0:
        for i in range(30):       # the child keeps nothing of its own
            leakscope.tick()
        os._exit(0)
    os.waitpid(pid, 0)
    """
)


def test_forked_child_is_its_own_run_without_the_parents_traces(tmp_path):
    script = tmp_path / "forker.py"
    script.write_text(FORKING)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--sample", "1", "--no-holders", "--json", str(out), "--",
                   sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    run = load_json(out)
    by_role = {p["process"]["role"]: p for p in run["processes"]}
    parent, child = by_role["forker.py"], by_role["forked from forker.py"]
    assert child["process"]["parent_pid"] == parent["process"]["pid"]
    # Saved by the os._exit wrapper: every unit is there.
    assert len(child["loops"]) == 30 and len(parent["loops"]) == 30
    assert parent["verdict"]["leak"] is True
    assert child["verdict"]["leak"] is False
    traced = [loop["traced_bytes"] for loop in child["loops"] if not loop["warmup"]]
    # The parent's 6 MiB of traced bytearrays are not the child's.
    assert max(traced) < 200 * 1024, traced


def test_integrations_wait_for_their_framework(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from leakscope.drive import agent
        assert agent.current() is not None
        assert "celery" not in sys.modules and "rq" not in sys.modules
        from celery import signals
        receivers = [r for r in signals.task_postrun.receivers]
        print(len(receivers))
        """
    )
    env = agent_env(tmp_path, Settings())
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) >= 1
    hello = json.loads(next(tmp_path.glob("*.jsonl")).read_text().splitlines()[0])
    assert hello["t"] == "hello" and hello["role"] == "python -c"


def test_outside_leakscope_run_the_startup_hook_does_nothing(tmp_path):
    env = agent_env(tmp_path, Settings())
    env.pop("LEAKSCOPE_AGENT")
    proc = subprocess.run(
        [sys.executable, "-c", "from leakscope.drive import agent; print(agent.current())"],
        env=env, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "None", proc.stderr
    assert not list(tmp_path.glob("*.jsonl"))


def test_sample_k_traces_every_kth_working_process(tmp_path):
    script = tmp_path / "forker.py"
    script.write_text(FORKING)
    out = tmp_path / "run.json"
    proc = run_cli("run", "--quiet", "--sample", "2", "--no-holders", "--json", str(out), "--",
                   sys.executable, str(script))
    assert proc.returncode == 0, proc.stderr
    by_role = {p["process"]["role"]: p for p in load_json(out)["processes"]}
    parent, child = by_role["forker.py"], by_role["forked from forker.py"]
    # The parent did work first: slot 0, traced; the child is watched, never traced.
    assert parent["process"]["traced"] is True and parent["process"]["traced_units"] == 20
    assert child["process"]["traced"] is False and child["process"]["traced_units"] == 0
    assert parent["verdict"]["leak"] is True and child["verdict"]["leak"] is False


WINDOWED = textwrap.dedent(
    """
    import sys
    import tracemalloc
    import leakscope

    class Bus:
        listeners = []

    for i in range(160):
        Bus.listeners.append(lambda i=i: i)
        leakscope.tick()
    with open(sys.argv[1], "w") as out:
        out.write(str(tracemalloc.is_tracing()))
    """
)


def test_a_traced_window_ends_and_the_counters_carry_on(tmp_path):
    """--sample K with --trace-units N: the picked process traces N units, names the holder
    and the line that grows it (a loop at module level included), stops tracemalloc for
    good and is watched to the end."""
    script = tmp_path / "bus.py"
    script.write_text(WINDOWED)
    out, tracing_file = tmp_path / "run.json", tmp_path / "tracing.txt"
    proc = run_cli("run", "--quiet", "--sample", "2", "--trace-units", "40", "--json", str(out),
                   "--", sys.executable, str(script), str(tracing_file))
    assert proc.returncode == 0, proc.stderr
    (process,) = load_json(out)["processes"]
    tracing = tracing_file.read_text()
    phases = [loop["phase"] for loop in process["loops"] if not loop["warmup"]]
    assert phases == ["locate"] * 40 + ["detect"] * 110
    assert tracing == "False"
    assert process["process"]["traced_units"] == 40
    verdict = process["verdict"]
    assert verdict["leak"] is True and verdict["kind"] == "reachable", verdict
    holder = process["holders"][0]
    assert holder["path"] == "bus.Bus.listeners" and holder["grown_at"], holder
    assert not [h for h in process["holders"] if "leakscope" in h["path"] or "agent" in h["path"]]


CYCLES = textwrap.dedent(
    """
    import gc
    import sys
    import leakscope

    gc.disable()

    class Node:
        def __init__(self):
            self.me = self
            self.payload = [0] * 20

    for i in range(160):
        Node()
        leakscope.tick()
    alive = sum(1 for obj in gc.get_objects() if type(obj) is Node)
    with open(sys.argv[1], "w") as out:
        out.write(str(alive))
    """
)


def test_the_window_is_described_in_a_copy_that_leaves_the_worker_untouched(tmp_path):
    """Closing the window takes one full collection (cyclic garbage or not?): it runs
    in a forked copy, so a gc.disable() worker keeps every cycle it made."""
    script = tmp_path / "cycles.py"
    script.write_text(CYCLES)
    out, alive = tmp_path / "run.json", tmp_path / "alive.txt"
    proc = run_cli("run", "--quiet", "--sample", "2", "--trace-units", "40", "--json", str(out),
                   "--", sys.executable, str(script), str(alive))
    assert proc.returncode == 0, proc.stderr
    assert alive.read_text() == "160"
    (process,) = load_json(out)["processes"]
    assert process["process"]["traced_units"] == 40
    verdict = process["verdict"]
    assert verdict["leak"] is True and verdict["kind"] == "cyclic-garbage", verdict
