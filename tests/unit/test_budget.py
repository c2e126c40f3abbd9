"""budget.exceeds, the one pass/fail rule of `check`, on a table of verdicts and budgets."""

from __future__ import annotations

import pytest

from leakscope.analysis.budget import Decision, exceeds, judge, parse_max_growth
from leakscope.model.errors import UsageError
from leakscope.model.runfile import Run, Verdict


def verdict(leak: bool, rate: float, kind: str | None = None) -> Verdict:
    return Verdict(
        leak=leak, kind=kind or ("reachable" if leak else "none"), bytes_per_iteration=rate,
        blocks_per_iteration=1.0, confidence=0.99, summary="",
    )


@pytest.mark.parametrize(
    ("leak", "rate", "budget", "fails"),
    [
        (True, 1392.0, 0, True),        # any leak fails the default budget
        (True, 0.0, 0, True),           # a leak whose rate rounds to 0 B still fails 0B
        (True, 0.0, 1024, True),        # a leak with no byte rate is within no budget
        (True, 1392.0, 1024, True),     # above the budget
        (True, 1024.0, 1024, False),    # at the budget: not above it
        (True, 1023.9, 1024, False),    # below the budget
        (True, 1392.0, 4096, False),
        (False, 0.0, 0, False),         # no leak never fails
        (False, 900.0, 0, False),       # a no-leak verdict's slope is not a leak
        (False, 900.0, 512, False),
    ],
)
def test_exceeds(leak, rate, budget, fails):
    assert exceeds(verdict(leak, rate), budget) is fails


@pytest.mark.parametrize("kind", ["reachable", "cyclic-garbage", "native"])
def test_every_leak_kind_counts(kind):
    assert exceeds(verdict(True, 100.0, kind), 0)
    assert not exceeds(verdict(True, 100.0, kind), 100)


@pytest.mark.parametrize(
    ("text", "size"),
    [("0B", 0), ("512B", 512), ("4KiB", 4096), ("1MiB", 1024**2), ("1.5KiB", 1536),
     ("2kb", 2000), ("100", 100), (0, 0), (2048, 2048)],
)
def test_parse_max_growth(text, size):
    assert parse_max_growth(text) == size


@pytest.mark.parametrize("text", ["", "lots", "4XB", "-1KiB", "1 parsec", True, -5])
def test_parse_max_growth_rejects_with_the_source_named(text):
    with pytest.raises(UsageError) as info:
        parse_max_growth(text, "max_growth")
    assert info.value.message.startswith("max_growth: ")
    assert info.value.exit_code == 2


def test_judge_reads_the_run_verdict():
    run = Run(target="w.py", python="3.11", started_at="now", settings={},
              verdict=verdict(True, 300.0))
    decision = judge("w.py", run, 256)
    assert decision == Decision(target="w.py", max_growth_bytes=256, run=run, failed=True)
    assert judge("w.py", run, 512).failed is False


def test_a_leak_with_no_byte_rate_reads_in_blocks():
    """"0 B/iter" would read as no growth; the counters' blocks are what was seen."""
    assert verdict(True, 0.0).rate("iter") == "1 blocks/iter"
    assert verdict(True, 440.0).rate("job") == "440 B/job"
