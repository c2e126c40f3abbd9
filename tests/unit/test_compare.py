"""compare.compare: what grows in NEW and not in BASE, on synthetic runs."""

from __future__ import annotations

from leakscope.analysis.compare import compare
from leakscope.model.runfile import Frame, Holder, Run, Site, Verdict


def site(file: str, line: int, function: str, rate: float = 100.0, growing: bool = True,
         user: tuple[str, int, str] | None = None) -> Site:
    frame = Frame(*user) if user else Frame(file, line, function)
    return Site(file=file, line=line, function=function, traceback=[frame], user_frame=frame,
                bytes_per_iteration=rate, blocks_per_iteration=1.0, growing=growing)


def holder(path: str, growing: bool = True) -> Holder:
    return Holder(path=path, type="list", role="registry", items_first=1, items_last=20,
                  items_per_iteration=1.0, growing=growing)


def run(leak: bool, rate: float, sites=(), holders=(), kind: str | None = None) -> Run:
    verdict = Verdict(leak=leak, kind=kind or ("reachable" if leak else "none"),
                      bytes_per_iteration=rate, blocks_per_iteration=0.0, confidence=0.9,
                      summary="")
    return Run(target="w.py", python="3.11", started_at="now", settings={}, verdict=verdict,
               sites=list(sites), holders=list(holders))


def test_identical_runs_have_nothing_new():
    a = run(True, 100.0, [site("app/x.py", 10, "f")], [holder("app.x.CACHE")])
    b = run(True, 100.0, [site("app/x.py", 10, "f")], [holder("app.x.CACHE")])
    result = compare(a, b)
    assert not result.has_new
    assert result.rate_change == 0.0
    assert [(x.line, y.line) for x, y in result.common_sites] == [(10, 10)]


def test_a_new_leak_is_new():
    base = run(False, 0.0, [site("app/x.py", 10, "f", growing=False)])
    new = run(True, 240.0, [site("app/x.py", 10, "f")], [holder("app.x.CACHE")])
    result = compare(base, new)
    assert result.has_new
    assert [s.line for s in result.new_sites] == [10]  # present in BASE, but not growing
    assert [h.path for h in result.new_holders] == ["app.x.CACHE"]
    assert result.newly_leaking
    assert result.rate_change == 240.0


def test_a_line_that_moved_in_the_same_function_is_not_new():
    base = run(True, 100.0, [site("app/x.py", 10, "f")])
    new = run(True, 110.0, [site("app/x.py", 14, "f")])
    result = compare(base, new)
    assert not result.new_sites and not result.gone_sites
    assert not result.has_new


def test_a_second_leaking_line_in_the_same_function_is_new():
    base = run(True, 100.0, [site("app/x.py", 10, "f")])
    new = run(True, 200.0, [site("app/x.py", 10, "f"), site("app/x.py", 12, "f")])
    result = compare(base, new)
    assert [s.line for s in result.new_sites] == [12]
    assert result.has_new


def test_same_library_line_reached_from_new_user_code_is_new():
    base = run(True, 100.0, [site("/usr/lib/logging.py", 5, "emit", user=("app/a.py", 3, "a"))])
    new = run(True, 200.0, [
        site("/usr/lib/logging.py", 5, "emit", user=("app/a.py", 3, "a")),
        site("/usr/lib/logging.py", 5, "emit", user=("app/b.py", 9, "b")),
    ])
    result = compare(base, new)
    assert [s.user_frame.file for s in result.new_sites] == ["app/b.py"]


def test_fixed_leaks_are_gone_not_new():
    base = run(True, 100.0, [site("app/x.py", 10, "f")], [holder("app.x.CACHE")])
    new = run(False, 0.0)
    result = compare(base, new)
    assert not result.has_new
    assert [s.line for s in result.gone_sites] == [10]
    assert [h.path for h in result.gone_holders] == ["app.x.CACHE"]
    assert result.rate_change == -100.0


def test_native_leak_without_sites_is_still_new():
    result = compare(run(False, 0.0), run(True, 1024.0, kind="native"))
    assert result.newly_leaking and result.has_new
    assert not result.new_sites


def test_holders_that_stopped_growing_are_not_new():
    base = run(True, 100.0, [], [holder("app.x.CACHE")])
    new = run(True, 100.0, [], [holder("app.x.CACHE"), holder("app.y.SEEN", growing=False)])
    assert not compare(base, new).new_holders
