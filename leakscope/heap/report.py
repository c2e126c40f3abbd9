"""Parent side: the probe's report turned into the run file's holders, ranked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from leakscope.model import sites
from leakscope.model.runfile import Holder


def _user_line(stack: list[list[Any]], display: Callable[[str], str]) -> str | None:
    for filename, line in stack:
        if sites.is_user_file(filename):
            return f"{display(filename)}:{line}"
    return None


def _display_location(location: str, display: Callable[[str], str]) -> str:
    filename, _, line = location.rpartition(":")
    return f"{display(filename)}:{line}"


def _rank(path: str) -> tuple:
    """Prefer public names and short paths when several containers grow alike."""
    private = sum(part.startswith("_") for part in path.replace("[", ".").split("."))
    return (private, path.count(".") + path.count("["), path)


def build_holders(
    report: dict[str, Any] | None,
    measured_at_checkpoints: list[int],
    display: Callable[[str], str],
) -> tuple[list[Holder], list[dict[str, Any]]]:
    """Holder records from the probe's report; bounded containers apart."""
    if not report:
        return [], []
    loops = (measured_at_checkpoints[-1] - measured_at_checkpoints[0]) if len(
        measured_at_checkpoints) >= 2 else 0
    holders: list[Holder] = []
    bounded_out: list[dict[str, Any]] = []
    for path, info in report.get("bounded", {}).items():
        series = info["series"]
        current = series[-1]
        bound = info["bound"]
        filling = len(series) >= 2 and series[-1] > series[0] and current < bound
        bounded_out.append({
            "path": path, "type": info["type"], "bound": bound, "items": current,
            "filling": filling, "full": current >= bound, "items_series": series,
            "lines_made": [[display(f), n] for f, n, _ in info.get("lines_made", [])],
        })
    for path, info in report.get("growing", {}).items():
        if info.get("bound") is not None:
            continue  # known bound: reported under `bounded`, never as a leak
        series = info["series"]
        stack = info.get("grown_at_stack") or []
        holders.append(Holder(
            path=path,
            type="lru_cache" if info["type"] == "lru_cache" else info["type"],
            role=info.get("role", "registry"),
            items_first=series[0], items_last=series[-1],
            items_per_iteration=round((series[-1] - series[0]) / loops, 3) if loops else 0.0,
            item_types=info.get("item_types", {}),
            callables_defined_at=[
                _display_location(x, display) for x in info.get("callables_defined_at", [])
            ],
            grown_at=_user_line(stack, display),
            items_made_at=[_display_location(x, display) for x in info.get("items_made_at", [])],
            items_series=series,
            bound=None,
            growing=True,
            grown_at_stack=[[display(f), n] for f, n in stack],
            keys_sample=info.get("keys_sample", []),
            item_noun=info.get("item_noun", "item"),
        ))
    holders.sort(key=lambda h: (-h.items_per_iteration, _rank(h.path)))
    backref = report.get("backref") or {}
    if not holders and backref.get("path"):
        # Found once, at the end: its growth is the items made while traced.
        length = backref["length"]
        made, units = backref.get("made_while_traced") or 0, backref.get("traced_units") or 0
        first = max(0, length - made)
        holders.append(Holder(
            path=backref["path"], type=backref["type"], role=backref.get("role", "registry"),
            items_first=first, items_last=length,
            items_per_iteration=round(made / units, 3) if units else 0.0,
            items_series=[first, length] if made and units else [],
            item_types=backref.get("item_types", {}),
            callables_defined_at=[
                _display_location(x, display) for x in backref.get("callables_defined_at", [])
            ],
            items_made_at=[_display_location(x, display) for x in backref.get("items_made_at", [])],
            keys_sample=backref.get("keys_sample", []),
            item_noun=backref.get("item_noun", "item"), found_by="backrefs",
        ))
    return holders, bounded_out
