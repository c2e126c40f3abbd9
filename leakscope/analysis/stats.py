"""The statistics under the verdict: floors, the sign test, Theil-Sen, the ratchet.

Pure functions of number series; nothing here knows what a run is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

ALPHA = 0.05

MIN_LOOPS = 5

MIN_BLOCKS = 5

SCALES = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 96, 128)

TAIL_RISE_FRACTION = 0.75

MIN_TAIL_STEPS = 3

# Theil-Sen is O(n^2); longer series are thinned to this many points.
SLOPE_POINTS = 400

SERIES_POINTS = 200

# RSS counts whole pages; where the loop records do not say the page size,
# the gcd of the RSS figures does (never above the largest page in use).
PAGE_BYTES = 4096
MAX_PAGE_BYTES = 65536

# ... unless that line's kept memory fell back by this share of its range
# during the run: memory released in bulk is not kept (see gave_back).
GAVE_BACK_SHARE = 0.25


@dataclass
class Evidence:
    """What the ratchet rule saw in one series."""

    leak: bool
    p_value: float
    scale: int
    rises: int
    steps: int
    tail_rises: int
    tail_steps: int
    slope: float

    @property
    def confidence(self) -> float:
        if self.leak:
            return round(1.0 - self.p_value, 4)
        if self.tail_steps == 0:
            return 0.0
        # Laplace's rule of succession on the tail: the chance the next step rises.
        return round(1.0 - (self.tail_rises + 1) / (self.tail_steps + 2), 4)


def suffix_minima(values: Sequence[float]) -> list[float]:
    out = list(values)
    for i in range(len(out) - 2, -1, -1):
        if out[i + 1] < out[i]:
            out[i] = out[i + 1]
    return out


def block_minima(values: Sequence[float], size: int) -> list[float]:
    """Minima of consecutive blocks, aligned to the end so the latest loops count."""
    start = len(values) % size
    return [min(values[i:i + size]) for i in range(start, len(values), size)]


def sign_test(rises: int, steps: int) -> float:
    """P(at least ``rises`` of ``steps`` fair coin flips come up heads).

    Summed in log space (``lgamma``) from the ``rises`` term outward, so a
    5,000-loop series costs microseconds instead of big-integer binomials.
    """
    if steps == 0 or rises <= 0:
        return 1.0
    if rises > steps:
        return 0.0
    log_half = steps * math.log(0.5)
    log_n = math.lgamma(steps + 1)
    total = 0.0
    for k in range(rises, steps + 1):
        term = math.exp(log_n - math.lgamma(k + 1) - math.lgamma(steps - k + 1) + log_half)
        total += term
        if term < total * 1e-17 and k > steps / 2:
            break
    return min(1.0, total)


def theil_sen(values: Sequence[float]) -> float:
    """Median of pairwise slopes: a rate that outliers cannot drag."""
    n = len(values)
    if n < 2:
        return 0.0
    if n > SLOPE_POINTS:
        step = n / SLOPE_POINTS
        idx = [int(i * step) for i in range(SLOPE_POINTS)] + [n - 1]
    else:
        idx = list(range(n))
    slopes = sorted(
        (values[j] - values[i]) / (j - i)
        for a, i in enumerate(idx) for j in idx[a + 1:] if j != i
    )
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def median3(values: Sequence[float]) -> list[float]:
    """Running median of three: one loop's spike or dip is noise, not a trend."""
    n = len(values)
    if n < 3:
        return list(values)
    out = [values[0]] * n
    for i in range(1, n - 1):
        a, b, c = values[i - 1], values[i], values[i + 1]
        # The middle one by comparisons: no list a point (this can run under
        # tracemalloc, where every allocation is dear).
        if a > b:
            a, b = b, a
        out[i] = a if c < a else (c if c < b else b)
    out[-1] = values[-1]
    return out


def scales_tried(n: int) -> list[int]:
    """The block sizes the rule tries on ``n`` points: each leaves MIN_BLOCKS blocks."""
    return [s for s in SCALES if n // s >= MIN_BLOCKS] or [1]


def _floor_at(values: Sequence[float], scale: int) -> tuple[list[bool], list[bool]]:
    """Whether the floor rose at each step at one block size, and the tail of those steps."""
    floor = suffix_minima(block_minima(values, scale))
    rising = [b > a for a, b in zip(floor, floor[1:])]
    return rising, rising[-max(MIN_TAIL_STEPS, len(rising) // 2):]


def ratchet(values: Sequence[float], *, slope_if_rising: bool = False) -> Evidence:
    """Apply the decision rule of this module to one series.

    ``slope_if_rising``: work out the rate (Theil-Sen, the rule's dearest part)
    only when some scale's floor rises as the rule asks, else report 0.0. The
    verdict is the same either way, since a leak needs both.
    """
    values = median3(values)
    n = len(values)
    slope: float | None = None
    if not slope_if_rising:
        slope = theil_sen(suffix_minima(values)) if n >= 2 else 0.0
    if n < MIN_LOOPS:
        return Evidence(False, 1.0, 1, 0, 0, 0, 0, slope or 0.0)
    scales = scales_tried(n)
    best: Evidence | None = None
    fallback: Evidence | None = None
    for scale in scales:
        rising, tail = _floor_at(values, scale)
        steps = len(rising)
        p_value = min(1.0, sign_test(sum(rising), steps) * len(scales))
        persistent = sum(tail) >= TAIL_RISE_FRACTION * len(tail)
        if persistent and p_value <= ALPHA and slope is None:
            slope = theil_sen(suffix_minima(values))
        evidence = Evidence(
            leak=False, p_value=p_value, scale=scale, rises=sum(rising), steps=steps,
            tail_rises=sum(tail), tail_steps=len(tail), slope=slope or 0.0,
        )
        if persistent and p_value <= ALPHA and evidence.slope > 0:
            evidence.leak = True
            if best is None or p_value < best.p_value:
                best = evidence
        elif fallback is None or scale == 1:
            fallback = evidence
    chosen = best or fallback or Evidence(False, 1.0, 1, 0, 0, 0, 0, 0.0)
    chosen.slope = slope or 0.0
    return chosen


def rose_at_one_scale(values: Sequence[float]) -> Evidence | None:
    """Where the rule found no leak: a block size at which the floor still rose as a leak's.

    The rule tries every block size and corrects its p-value for the number
    tried. A floor that rose at every step of the run's last half at one
    size, significant there alone but not after the correction, is what a
    small leak under a saw-tooth, or a bound still filling, looks like over
    a short run: the run cannot call it either way. (A bound that filled and
    then held for the last steps fails the first condition.) Returns that
    size's evidence, its p-value uncorrected, the most significant one; or None.
    Read only where ``ratchet`` found no leak in the same series.
    """
    if len(values) < MIN_LOOPS:
        return None
    values = median3(values)
    found: Evidence | None = None
    for scale in scales_tried(len(values)):
        rising, tail = _floor_at(values, scale)
        p_value = sign_test(sum(rising), len(rising))
        if not all(tail) or p_value > ALPHA:
            continue
        if found is None or p_value < found.p_value:
            found = Evidence(
                leak=False, p_value=p_value, scale=scale, rises=sum(rising),
                steps=len(rising), tail_rises=sum(tail), tail_steps=len(tail), slope=0.0,
            )
    if found is not None:
        found.slope = theil_sen(suffix_minima(values))
        if found.slope <= 0:
            return None
    return found


def page_size(rss: Iterable[float]) -> int:
    """The page size RSS was counted in: the gcd of its figures, PAGE_BYTES without any."""
    size = 0
    for value in rss:
        size = math.gcd(size, int(value))
    return min(size, MAX_PAGE_BYTES) if size >= PAGE_BYTES else PAGE_BYTES


def page_ratchet(values: Sequence[float], page: int = PAGE_BYTES) -> Evidence:
    """The rule on a series that moves in whole pages (RSS beyond malloc's heap).

    Read in pages rounded down, so a figure that wanders within a page is no
    rise: only a floor that gains a whole page counts, and a leak smaller than
    a page a loop shows at the block sizes (spans of loops) where each span's
    floor gains one. The slope is in bytes.
    """
    evidence = ratchet([float(v // page) for v in values])
    evidence.slope *= page
    return evidence


def loops_to_decide(rate: float, page: int = PAGE_BYTES, limit: int = 1_000_000) -> int:
    """Loops the page rule needs to call a steady leak of ``rate`` bytes a loop.

    RSS gains a page every ``page / rate`` loops; the rule needs that many
    loops per block, and enough blocks whose floors all rise for the sign
    test, Bonferroni-corrected over the scales tried, to reach ALPHA.
    """
    if rate <= 0:
        return limit
    span = max(1, math.ceil(page / rate))
    for n in range(MIN_LOOPS, limit):
        scales = [s for s in SCALES if n // s >= MIN_BLOCKS] or [1]
        usable = [s for s in scales if s >= span]
        if usable and sign_test(n // usable[0] - 1, n // usable[0] - 1) * len(scales) <= ALPHA:
            return n
    return limit


def thin(values: Sequence[float], points: int = SERIES_POINTS) -> list[float]:
    if len(values) <= points:
        return list(values)
    step = len(values) / points
    return [values[int(i * step)] for i in range(points - 1)] + [values[-1]]


def gave_back(series: Sequence[float]) -> bool:
    """Whether a series fell, at some point, by GAVE_BACK_SHARE of its whole range or more."""
    if len(series) < 3:
        return False
    spread = max(series) - min(series)
    peak, drop = series[0], 0.0
    for value in series:
        peak = max(peak, value)
        drop = max(drop, peak - value)
    return spread > 0 and drop >= GAVE_BACK_SHARE * spread
