"""The RSS rule on synthetic series: memory mapped outside malloc (an extension's own
``mmap``, CPython's arenas) is RSS beyond malloc's heap, decided in whole pages."""

from __future__ import annotations

import random

import pytest

from leakscope.analysis import analyse, decide
from leakscope.analysis.rules import RSS_MIN_RATE
from leakscope.analysis.stats import loops_to_decide, page_ratchet
from leakscope.model.runfile import Run
from tests.unit.test_analysis import flat_native, make_run, plateau

PAGE = 4096
BASE = 60_000_000 // PAGE * PAGE
HEAP = 9_000_000


def mapped_run(rss: list[float], heap: list[float] | None = None,
               in_use: list[float] | None = None, **kwargs) -> Run:
    """A full-mode run whose Python and malloc series are flat and whose RSS is ``rss``;
    malloc's heap is ``heap``, its bytes in use ``in_use`` (unrecorded if None)."""
    n = len(rss)
    run = make_run(plateau(n, 0), native=flat_native(n), rss=rss, **kwargs)
    for i, loop in enumerate(run.measured):
        loop.malloc_heap_bytes = int(heap[i] if heap is not None else HEAP)
        loop.malloc_bytes = int(in_use[i]) if in_use is not None else None
    return run


def pages(values: list[float]) -> list[float]:
    return [v // PAGE * PAGE for v in values]


@pytest.mark.parametrize("rate", [32768, 4096, 2048, 1024, 700, 512, 300, 100])
@pytest.mark.parametrize("offset", [0, 1234, 4095])
def test_loops_to_decide_is_what_the_page_rule_needs(rate: float, offset: int) -> None:
    """A steady leak of ``rate`` is called at loops_to_decide(rate) loops; from the
    RSS minimum rate up (a page every 8 loops or more often), not one sooner. Slower,
    a block one loop short of a page often gains one too: the count is an upper bound."""
    n = loops_to_decide(rate)

    def series(length: int) -> list[float]:
        return pages([BASE + offset + rate * i for i in range(length)])

    assert page_ratchet(series(n)).leak
    if rate >= RSS_MIN_RATE:
        assert not page_ratchet(series(n - 1)).leak


def test_a_series_that_wanders_within_a_page_never_rises() -> None:
    rng = random.Random(3)
    values = [BASE + 100 + rng.randrange(0, 3000) + 10 * i for i in range(90)]
    assert not page_ratchet(values).leak


def test_mapped_memory_that_keeps_growing_is_native() -> None:
    rng = random.Random(1)
    rss = [BASE + 32768 * i + PAGE * rng.choice([0, 0, 1, 3]) for i in range(50)]
    run = analyse(mapped_run(rss))
    verdict = run.verdict
    assert (verdict.leak, verdict.kind) == (True, "native"), verdict.summary
    assert verdict.bytes_per_iteration == pytest.approx(32768, rel=0.05)
    assert verdict.evidence["outside_malloc"] is True
    assert "outside malloc" in verdict.summary and "seen in RSS" in verdict.summary


def test_rss_that_mallocs_heap_explains_is_no_leak() -> None:
    """glibc keeping a growing burst's free chunks: RSS and malloc's heap rise together."""
    rss = [BASE + 32768 * i for i in range(50)]
    heap = [HEAP + 32768 * i for i in range(50)]
    assert not decide(mapped_run(rss, heap)).leak


@pytest.mark.parametrize("seed", range(5))
def test_mapped_warmup_that_then_saws_is_no_leak(seed: int) -> None:
    """A cache of mapped blocks grows for 100 loops, then saws over a flat floor."""
    rng = random.Random(seed)
    blocks = [min(i, 100) if i < 100 else 80 + rng.randrange(0, 21) for i in range(300)]
    verdict = decide(mapped_run([BASE + 32768 * b for b in blocks]))
    assert not verdict.leak and not verdict.undecided, verdict.summary


def test_a_short_run_of_a_slow_mapped_leak_is_undecided_with_the_loops_it_needs() -> None:
    rate, n = 1024, 20
    run = analyse(mapped_run(pages([BASE + rate * i for i in range(n)])))
    verdict = run.verdict
    assert verdict.undecided and verdict.confidence == 0.0, verdict.summary
    needed = loops_to_decide(rate)
    assert verdict.evidence["needs_units"] == needed - n
    assert f"--iterations {needed}" in verdict.summary
    assert "a page every 4 iterations" in verdict.summary
    # ... and a run that long calls it.
    longer = decide(mapped_run(pages([BASE + rate * i for i in range(needed)])))
    assert (longer.leak, longer.kind) == (True, "native"), longer.summary


def test_below_the_rss_minimum_rate_nothing_is_called() -> None:
    rate = RSS_MIN_RATE / 2
    verdict = decide(mapped_run(pages([BASE + rate * i for i in range(400)])))
    assert not verdict.leak and not verdict.undecided, verdict.summary


def test_a_real_workers_process_is_not_judged_on_rss() -> None:
    """`run`/`attach`: a framework maps and unmaps on its own schedule; RSS is not read."""
    run = mapped_run([BASE + 32768 * i for i in range(50)])
    run.process = {"pid": 1, "parent_pid": 0, "role": "worker", "command": "w"}
    assert decide(run).kind != "native"


IN_USE = 2_000_000


def test_malloc_touching_a_heap_it_extended_is_not_mapped_memory() -> None:
    """The gc-enabled cycles worker (sqs_cycles_gc_enabled.py) in some builds: malloc's
    heap grew 880 KiB at one loop and its fresh pages were touched ~1 KiB a loop after,
    as its bytes in use rose. RSS beyond the heap climbed like a leak (CI: "Leak (native):
    1.09 KiB/iter ... outside malloc" in 1 run of 20); RSS beyond the bytes in use did not."""
    n = 50
    heap = [HEAP + (880 * 1024 if i >= 12 else 0) for i in range(n)]
    in_use = [IN_USE + 1024 * i for i in range(n)]
    rss = [BASE + PAGE * (1024 * i // PAGE) for i in range(n)]
    alone = decide(mapped_run(rss, heap))  # the heap alone: undecided, or a false leak
    assert alone.leak or alone.undecided, alone.summary
    verdict = decide(mapped_run(rss, heap, in_use))
    assert not verdict.leak and not verdict.undecided, verdict.summary


def test_malloc_freeing_into_fragments_is_not_mapped_memory() -> None:
    """The other bound: malloc's bytes in use fall while its pages stay resident."""
    n = 50
    in_use = [IN_USE + 600_000 - 8192 * i for i in range(n)]
    verdict = decide(mapped_run([float(BASE)] * n, in_use=in_use))
    assert not verdict.leak and not verdict.undecided, verdict.summary


def test_mapped_memory_raises_both_bounds_and_is_native() -> None:
    rng = random.Random(1)
    rss = [BASE + 32768 * i + PAGE * rng.choice([0, 0, 1, 3]) for i in range(50)]
    verdict = decide(mapped_run(rss, in_use=[IN_USE + rng.randrange(-300, 300)
                                             for _ in range(50)]))
    assert (verdict.leak, verdict.kind) == (True, "native"), verdict.summary
    assert verdict.bytes_per_iteration == pytest.approx(32768, rel=0.05)
