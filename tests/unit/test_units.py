"""Sizes in and out: ``parse_size`` for budgets and limits, ``format_bytes`` for people."""

from __future__ import annotations

import pytest

from leakscope.model.errors import EXIT_USAGE, UsageError
from leakscope.model.units import format_bytes, format_rate, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("0B", 0),
        ("512", 512),
        ("512B", 512),
        ("512b", 512),
        ("4KiB", 4096),
        ("4kib", 4096),
        ("4 KiB", 4096),
        (" 4KiB ", 4096),
        ("1.5KiB", 1536),
        ("1k", 1000),
        ("1KB", 1000),
        ("2MB", 2_000_000),
        ("1MiB", 1024**2),
        ("1.5MiB", 1572864),
        ("512MiB", 512 * 1024**2),
        ("1G", 1000**3),
        ("2GiB", 2 * 1024**3),
        ("0.5B", 0),  # bytes are whole: a fraction is cut, not rounded up
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "B", "KiB", "abc", "-1", "-1KiB", "+1KiB", "1XB", "1 TiB", "1.2.3", "1e3", "1,000",
     "4 K iB", "0x10", "inf", "nan", "12 bytes"],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_size(text)
    assert info.value.exit_code == EXIT_USAGE
    assert repr(text) in info.value.message
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (0.4, "0.4 B"),
        (5.5, "5.5 B"),
        (9.96, "10 B"),
        (10, "10 B"),
        (512, "512 B"),
        (1023, "1,023 B"),
        (1023.6, "1 KiB"),  # what would print as "1,024 B" moves up a unit
        (1024, "1 KiB"),
        (1392, "1.36 KiB"),
        (1536, "1.5 KiB"),
        (100 * 1024, "100 KiB"),
        (1000 * 1024, "1,000 KiB"),
        (1024**2 - 1, "1 MiB"),
        (1024**2, "1 MiB"),
        (3.25 * 1024**2, "3.25 MiB"),
        (1024**3, "1 GiB"),
        (1024**4, "1,024 GiB"),  # GiB is the largest unit
        (-512, "-512 B"),
        (-1536, "-1.5 KiB"),
        (-0.04, "0.0 B"),  # no "-0.0"
    ],
)
def test_format_bytes(value: float, text: str) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (512, "+512 B"), (-512, "-512 B"), (1536, "+1.5 KiB"), (-0.04, "0.0 B")],
)
def test_format_bytes_signed(value: float, text: str) -> None:
    assert format_bytes(value, signed=True) == text


def test_format_rate() -> None:
    assert format_rate(1392) == "1.36 KiB/iter"
    assert format_rate(56, "task") == "56 B/task"


@pytest.mark.parametrize("size", [0, 1, 512, 4096, 1536, 1024**2, 3 * 1024**3])
def test_formatted_binary_sizes_parse_back(size: int) -> None:
    """What we print for a whole number of units can be pasted into --max-growth."""
    assert parse_size(format_bytes(size).replace(" ", "").replace(",", "")) == size
