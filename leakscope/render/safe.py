"""Run strings as text: the one helper every renderer shows run-file strings through.

A run file is data from elsewhere, and its strings (paths, reprs, the verdict's
sentence) can hold terminal escape sequences that retitle the terminal, clear
the screen or plant hyperlinks, bidirectional overrides that show a name
backwards, or lone surrogates that cannot be encoded for output. Each such
character is shown as its Python escape (``\\x1b``, ``\\u202e``), so it is
visible and harmless, and the text around it stays as it was. Markup (rich's
``[link=...]``) is a renderer's own concern: the console builds ``Text``
objects or escapes, HTML enters through ``tojson`` and ``textContent``.
"""

from __future__ import annotations

import re
from dataclasses import is_dataclass, replace
from typing import Any, TypeVar

T = TypeVar("T")

# C0 controls (newline and tab too: a run string is one line, our renderers
# make the line breaks), DEL and C1 controls (0x9b is CSI on some terminals),
# line and paragraph separators, bidirectional controls, and lone surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control, bidi and surrogate character shown as its escape."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def displayed(value: T) -> T:
    """A copy of a Run (or Comparison, Site...) whose every string is ``printable``.

    Renderers call it once on what they are given, so no field can be
    forgotten. Objects with nothing to change are returned as they are, so a
    clean 10,000-loop run costs one walk and no copies.
    """
    return _clean(value)


_ATOMS = (int, float, bool, type(None))


def _clean(value: Any) -> Any:
    kind = type(value)
    if kind is str:
        return printable(value)
    if kind in _ATOMS:
        return value
    if kind is list or kind is tuple:
        items = [_clean(item) for item in value]
        if all(a is b for a, b in zip(items, value)):
            return value
        return items if kind is list else tuple(items)
    if kind is dict:
        pairs = [(_clean(k), _clean(v)) for k, v in value.items()]
        same = all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items()))
        return value if same else dict(pairs)
    if is_dataclass(value) and not isinstance(value, type):
        # vars(): every field of our (slot-less) dataclasses, cheaper than fields().
        changed = {}
        for name, old in vars(value).items():
            new = _clean(old)
            if new is not old:
                changed[name] = new
        return replace(value, **changed) if changed else value
    return value
