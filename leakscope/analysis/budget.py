"""The CI budget: parses ``--max-growth`` and decides whether a verdict fails ``check``."""

from __future__ import annotations

from dataclasses import dataclass

from leakscope.model.errors import UsageError
from leakscope.model.runfile import Run, Verdict
from leakscope.model.units import MAX_SIZE, parse_size

# No growth allowed: a CI gate should fail on any leak unless a team says
# how much per-iteration growth it accepts.
DEFAULT_MAX_GROWTH = "0B"


def parse_max_growth(text: str | int, source: str = "--max-growth") -> int:
    """Bytes per iteration from ``0B``, ``512B``, ``4KiB``, ``1MiB`` (or a bare byte count).

    ``source`` names where the value came from (an option or a config key),
    so that the one-line error points at the thing to fix.
    """
    if isinstance(text, bool):
        raise UsageError(f"{source}: not a size: {text!r} (use e.g. 0B, 512B, 4KiB, 1MiB)")
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"{source}: not a size: {text!r} (must be 0 or more)")
        if text > MAX_SIZE:
            raise UsageError(f"{source}: not a size: {text!r} (too large; at most 8 EiB)")
        return text
    try:
        return parse_size(text)
    except UsageError as exc:
        raise UsageError(f"{source}: {exc.message}") from None


def exceeds(verdict: Verdict, max_growth_bytes: float) -> bool:
    """True when the verdict is a leak whose rate is above the per-iteration budget.

    The budget is a rate, like the verdict, so that it does not depend on how
    many iterations a run measured. A budget of zero fails every leak, even
    one whose rate rounds to 0 B: the rule only calls a leak when the floor's
    slope is positive, so the rounding must not let it through. Nor does any
    budget pass a leak with no byte rate (fast mode's counters called it, and
    no traced line kept bytes to show): it cannot be shown within the budget.
    """
    if not verdict.leak:
        return False
    if max_growth_bytes <= 0 or verdict.bytes_per_iteration <= 0:
        return True
    return verdict.bytes_per_iteration > max_growth_bytes


@dataclass
class Decision:
    """What ``check`` decided for one target, for the exit code and the JUnit testcase.

    ``run`` is None when the worker itself failed: there is no verdict to
    judge, only ``error``, the one line the CLI would print.
    """

    target: str
    max_growth_bytes: int
    run: Run | None = None
    failed: bool = False
    error: str | None = None
    seconds: float | None = None  # wall time of the trace, for the JUnit testcase


def judge(target: str, run: Run, max_growth_bytes: int) -> Decision:
    """Apply ``exceeds`` to a run's saved verdict (never a recomputed one)."""
    assert run.verdict is not None
    return Decision(
        target=target, max_growth_bytes=max_growth_bytes, run=run,
        failed=exceeds(run.verdict, max_growth_bytes),
    )
