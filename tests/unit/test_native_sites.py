"""native_sites: which memray records become native sites, and the ELF symbol lookup."""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass, field

from leakscope.analysis.ranking import steady
from leakscope.measure import native_sites
from leakscope.measure.native_sites import _place, _sites, _Symbols

USER = os.path.abspath("app/worker.py")
EXE = os.path.realpath(sys.executable)


@dataclass
class FakeRecord:
    """The parts of memray's AllocationRecord that native_sites reads."""

    python: list[tuple[str, str, int]]
    native: list[tuple[str, str, int]]
    size: int = 1024
    n_allocations: int = 6
    extra: dict = field(default_factory=dict)

    def stack_trace(self) -> list[tuple[str, str, int]]:
        return self.python

    def hybrid_stack_trace(self) -> list[tuple[str, str, int]]:
        return self.native + self.python


class FakeSymbols(_Symbols):
    def __init__(self, where: dict[str, str | None]) -> None:
        super().__init__([], EXE)
        self._found = dict(where)


PY = [("iteration", USER, 25), ("run_loops", "/x/leakscope/measure/harness.py", 210)]


def test_extension_allocation_is_a_native_site_at_the_user_line():
    symbols = FakeSymbols({"foo_alloc": "/lib/libfoo.so", "keep": "/lib/libfoo.so"})
    record = FakeRecord(PY, [("foo_alloc", "foo.c", 3), ("keep", "foo.c", 9)])
    placed = _place(record, symbols)
    assert placed is not None and placed[1:] == ("foo_alloc", "/lib/libfoo.so")
    (site,) = _sites([record], 6, symbols, lambda f: f, {})
    assert site.engine == "memray" and site.native == {"function": "foo_alloc",
                                                       "library": "libfoo.so"}
    assert (site.user_frame.file, site.user_frame.line) == (USER, 25)
    assert site.bytes_per_iteration == round(1024 / 6, 1) and steady(site, 6)


def test_allocator_frames_are_skipped_to_their_caller():
    symbols = FakeSymbols({"strdup": "/usr/lib/x86_64-linux-gnu/libc.so.6",
                           "foo_copy": "/lib/libfoo.so"})
    record = FakeRecord(PY, [("strdup", "strdup.c", 1), ("foo_copy", "foo.c", 4)])
    assert _place(record, symbols)[1] == "foo_copy"


def test_python_allocations_are_not_native_sites():
    symbols = FakeSymbols({"new_keys_object": EXE})
    record = FakeRecord(PY, [("new_keys_object", "Objects/dictobject.c", 632)])
    assert _place(record, symbols) is None
    # Library unknown: CPython's own sources still say it is the interpreter's.
    unknown = FakeSymbols({})
    assert _place(FakeRecord(PY, [("list_resize", "Objects/listobject.c", 81)]), unknown) is None


def test_leakscopes_own_and_frameless_allocations_are_left_out():
    own = os.path.join(os.path.dirname(native_sites.__file__), "collector.py")
    symbols = FakeSymbols({"foo_alloc": "/lib/libfoo.so"})
    record = FakeRecord([("_record", own, 1)], [("foo_alloc", "foo.c", 3)])
    assert _place(record, symbols) is None
    assert _place(FakeRecord([], [("foo_alloc", "foo.c", 3)]), symbols) is None


def test_a_buffer_kept_once_is_not_steady():
    symbols = FakeSymbols({"foo_alloc": "/lib/libfoo.so"})
    record = FakeRecord(PY, [("foo_alloc", "foo.c", 3)], size=65536, n_allocations=1)
    (site,) = _sites([record], 6, symbols, lambda f: f, {})
    assert not steady(site, 6)


def test_elf_lookup_finds_a_function_of_the_interpreter():
    libraries = [EXE]
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    name = sysconfig.get_config_var("LDLIBRARY") or ""
    if name and os.path.exists(os.path.join(libdir, name)):
        libraries.append(os.path.realpath(os.path.join(libdir, name)))
    symbols = _Symbols(libraries, EXE)
    assert symbols.library_of("PyList_Append") in libraries
    assert symbols.library_of("no_such_function_anywhere_xyz") is None
