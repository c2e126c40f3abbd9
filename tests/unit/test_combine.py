"""Per-process runs combined into one, the recycling advice, and the framework-growth rule."""

from __future__ import annotations

from leakscope.analysis.combine import advice, combine, ru_maxrss_spike
from leakscope.analysis.policy import FRAMEWORK_HORIZON, framework_growth_undecided
from leakscope.measure.worker_collector import CheckpointSchedule
from leakscope.model.runfile import Frame, Loop, Run, Site, Verdict

MiB = 1024 * 1024


def _run(role: str, leak: bool, rate: float, units: int = 100, **process) -> Run:
    run = Run(target="celery worker", python="3.11", started_at="t", settings={})
    run.unit = "task"
    run.loops = [Loop(index=i, warmup=False, rss_bytes=50 * MiB) for i in range(units)]
    run.verdict = Verdict(leak=leak, kind="reachable" if leak else "none",
                          bytes_per_iteration=rate, blocks_per_iteration=1.0,
                          confidence=0.99, summary=f"{role} summary",
                          memory_limit_bytes=512 * MiB)
    run.process = {"pid": len(role), "parent_pid": 1, "role": role, "command": "celery",
                   **process}
    return run


def test_worst_leaking_process_leads():
    quiet = _run("celery main process", False, 0.0, units=0)
    small = _run("celery pool child", True, 100.0)
    big = _run("celery pool child", True, 900.0)
    run = combine([quiet, small, big], "celery worker", {}, "t")
    assert run.verdict.leak and run.verdict.bytes_per_iteration == 900.0
    assert "1 more process leak" in run.verdict.summary
    assert run.processes == [quiet, small, big]
    assert run.unit == "task"


def test_no_leak_anywhere_is_one_combined_verdict():
    run = combine([_run("gunicorn worker", False, 0.0), _run("gunicorn worker", False, 0.0)],
                  "gunicorn", {}, "t")
    assert not run.verdict.leak and run.verdict.kind == "none"
    assert "No leak in any of the 2 processes" in run.verdict.summary


def test_recycle_advice_in_the_frameworks_terms():
    celery = _run("celery pool child", True, 1024.0, framework="celery")
    (line,) = advice(celery)
    # (0.9 * (512 - 50) MiB) / 1 KiB per task
    assert f"--max-tasks-per-child={int(0.9 * 462 * 1024)}" in line
    gunicorn = _run("gunicorn worker", True, 1024.0, framework="gunicorn")
    assert "--max-requests " in advice(gunicorn)[0] and "--max-requests-jitter" in advice(
        gunicorn)[0]
    limited = _run("celery pool child", True, 1024.0, framework="celery",
                   max_memory_per_child_bytes=100 * MiB)
    assert f"--max-tasks-per-child={int(0.9 * 50 * 1024)}" in advice(limited)[0]


def test_peak_rss_spike_is_named_for_celery():
    spiked = _run("celery pool child", False, 0.0, framework="celery",
                  peak_rss_bytes=300 * MiB, rss_bytes=60 * MiB,
                  max_memory_per_child_bytes=200 * MiB)
    text = ru_maxrss_spike(spiked)
    assert text and "ru_maxrss" in text and "recycled after every task" in text
    steady = _run("celery pool child", False, 0.0, framework="celery",
                  peak_rss_bytes=62 * MiB, rss_bytes=60 * MiB)
    assert ru_maxrss_spike(steady) is None


def _growing_site(file: str, rate: float, user: bool) -> Site:
    frame = Frame(file, 10, "f")
    return Site(file=file, line=10, function="f", traceback=[frame],
                user_frame=frame if user else None, bytes_per_iteration=rate,
                blocks_per_iteration=1.0, growing=True)


def test_framework_only_growth_is_undecided_until_the_horizon():
    run = _run("rq worker", True, 500.0, units=200)
    run.sites = [_growing_site(".venv/lib/site-packages/rq/utils.py", 500.0, user=False)]
    verdict = framework_growth_undecided(run.verdict, run)
    assert not verdict.leak
    assert verdict.evidence["needs_units"] == FRAMEWORK_HORIZON - 200
    assert "Undecided" in verdict.summary and "800 more tasks" in verdict.summary
    longer = _run("rq worker", True, 500.0, units=FRAMEWORK_HORIZON)
    longer.sites = run.sites
    assert framework_growth_undecided(longer.verdict, longer).leak


def test_a_users_line_with_a_real_share_decides_at_once():
    run = _run("celery pool child", True, 500.0, units=60)
    run.sites = [_growing_site("lib/site-packages/celery/x.py", 500.0, user=False),
                 _growing_site("app/tasks.py", 200.0, user=True)]
    assert framework_growth_undecided(run.verdict, run).leak
    run.sites[1].bytes_per_iteration = 4.0  # free-list noise beside the framework's cache
    assert not framework_growth_undecided(run.verdict, run).leak


def test_checkpoint_schedule_is_dense_early_then_regular():
    schedule = CheckpointSchedule(100)
    assert [n for n in range(0, 401) if n in schedule] == [0, 10, 30, 60, 100, 200, 300, 400]


def test_framework_growth_that_slows_down_is_settling_at_any_length():
    units = FRAMEWORK_HORIZON + 200
    settling = _run("celery pool child", True, 20.0, units=units)
    for i, loop in enumerate(settling.loops):  # fast at first, then a trickle
        loop.traced_bytes = int(40 * min(i, 600) + 4 * max(0, i - 600))
    settling.sites = [_growing_site("lib/site-packages/billiard/common.py", 20.0, user=False)]
    verdict = framework_growth_undecided(settling.verdict, settling)
    assert not verdict.leak and "its rate fell from" in verdict.summary
    assert verdict.evidence["needs_units"] == units
    steady = _run("celery pool child", True, 20.0, units=units)
    for i, loop in enumerate(steady.loops):
        loop.traced_bytes = 20 * i
    steady.sites = settling.sites
    assert framework_growth_undecided(steady.verdict, steady).leak


def _windowed(spike_at: int | None = None) -> Run:
    """Untraced units at 50 MiB, a traced window whose tracemalloc memory lifts the peak
    to 150 MiB, then untraced units back at 60 MiB (tracing stopped, its memory freed)."""
    run = _run("consumer.py", False, 0.0, units=0, peak_rss_bytes=150 * MiB,
               rss_bytes=60 * MiB)
    peak = 50 * MiB
    for i in range(90):
        traced = 20 <= i < 30
        rss = 50 * MiB + (i - 19) * 10 * MiB if traced else (50 if i < 20 else 60) * MiB
        if i == spike_at:
            rss = 220 * MiB
        peak = max(peak, rss)
        run.loops.append(Loop(index=i, warmup=False, rss_bytes=rss if i != spike_at else 60 * MiB,
                              peak_rss_bytes=peak, traced_bytes=1000 if traced else None))
    run.process["peak_rss_bytes"] = peak
    return run


def test_leakscopes_own_tracing_window_is_not_a_spike():
    assert ru_maxrss_spike(_windowed()) is None
    spiked = ru_maxrss_spike(_windowed(spike_at=60))
    assert spiked and "peaked at 220 MiB" in spiked, spiked
