"""A bounded repr that never runs user code, for dict keys in holder paths.

``repr(key)`` on a user object calls its ``__repr__``; the heap walk must
not. Builtin scalars and tuples of them are rendered exactly (shortened);
anything else is shown by its type name only, read from the type itself.
"""

from __future__ import annotations

MAX_LENGTH = 40


def type_name(obj: object) -> str:
    """``type(obj).__name__`` read from the type's own slot (a metaclass cannot intercept it)."""
    return vars(type)["__name__"].__get__(type(obj))


def qualified_type_name(cls: type) -> str:
    module = vars(type)["__module__"].__get__(cls)
    name = vars(type)["__qualname__"].__get__(cls)
    if module in (None, "builtins"):
        return name
    return f"{module}.{name}"


def safe_repr(obj: object, limit: int = MAX_LENGTH) -> str:
    # `type(obj) is` rather than isinstance: a subclass's own __repr__ or __len__ is user
    # code, and never runs here.
    if obj is None or type(obj) is bool:
        text = "None" if obj is None else ("True" if obj else "False")
    elif type(obj) is int:
        text = int.__repr__(obj)
    elif type(obj) is float:
        text = float.__repr__(obj)
    elif type(obj) is str:
        text = str.__repr__(obj if len(obj) <= limit else obj[:limit])
    elif type(obj) is bytes:
        text = bytes.__repr__(obj[:limit])
    elif type(obj) is tuple:
        parts = [safe_repr(item, limit // 2) for item in obj[:4]]
        more = ", ..." if len(obj) > 4 else ("," if len(obj) == 1 else "")
        text = f"({', '.join(parts)}{more})"
    else:
        return f"<{type_name(obj)}>"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
