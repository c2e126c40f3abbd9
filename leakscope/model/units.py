"""Sizes in and out: parse "4KiB" budgets, print "1.4 KiB/iter"."""

from __future__ import annotations

import re

from leakscope.model.errors import UsageError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
}
# The largest size accepted (8 EiB): a signed 64-bit byte count, far above any
# memory limit or budget, and small enough for every sum and product of sizes.
MAX_SIZE = 2**63 - 1
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse ``512B``, ``4KiB``, ``1.5MiB`` or a bare byte count into bytes."""
    match = _SIZE.match(str(text))
    unit = match.group(2).lower() if match else None
    shown = repr(text) if len(str(text)) <= 40 else repr(str(text)[:40] + "...")
    if not match or unit not in _UNITS:
        raise UsageError(f"not a size: {shown} (use e.g. 0B, 512B, 4KiB, 1MiB)")
    size = float(match.group(1)) * _UNITS[unit]  # 400 digits are inf, not an error
    if not size <= MAX_SIZE:
        raise UsageError(f"not a size: {shown} (too large; at most 8 EiB)")
    return int(size)


def format_bytes(value: float, signed: bool = False) -> str:
    """Binary units, three significant figures: ``1.4 KiB``, ``-512 B``."""
    sign = ""
    if value < 0:
        sign = "-"
    elif signed and value > 0:
        sign = "+"
    size = abs(float(value))
    for unit in ("B", "KiB", "MiB", "GiB"):
        # Compare what will be printed, so 1,048,575 B reads "1 MiB", not "1,024 KiB".
        if round(size) < 1024 or unit == "GiB":
            if unit == "B":
                exact = round(size, 1) >= 10 or size == int(size)
                text = f"{size:,.0f}" if exact else f"{size:.1f}"
                if float(text.replace(",", "")) == 0:
                    sign = ""  # -0.04 prints as "0.0 B", not "-0.0 B"
                return f"{sign}{text} B"
            return f"{sign}{size:.3g} {unit}" if size < 100 else f"{sign}{size:,.0f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_rate(bytes_per_iteration: float, unit: str = "iter") -> str:
    return f"{format_bytes(bytes_per_iteration)}/{unit}"


def format_count(value: float) -> str:
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.1f}"


def short_unit(unit: str) -> str:
    """``iteration`` reads as ``iter`` in rates; task, job and request stay."""
    return "iter" if unit == "iteration" else unit
