"""Sites from the memray locator's capture, read in leakscope's own process.

The measured process wrote a memray capture over its locate loops
(``leakscope.measure.memray_window``). Here its allocations still alive when the
window closed become sites, with the same "user frame" rule as tracemalloc's
sites (``leakscope.model.sites``), plus the native function that allocated:

- an allocation whose innermost native code (past the C library's own
  allocators) is the interpreter's is a Python allocation: tracemalloc, which
  runs over the same loops, already accounts for it, with the fates (cycles
  the gc frees, free lists) the verdict reads; it never becomes a memray site;
- an allocation whose first Python frame outside the libraries is leakscope's
  is leakscope's own;
- what is left was allocated in native code under the user's line. It is
  grouped by (user line, native function, library) and rated per loop; a
  group counts as steady only if it kept blocks in at least half the loops
  (one buffer the extension caches, or a pool it grew once, is not).

Whether any of it is a leak is the verdict's to say, on the counters
(``leakscope.analysis``): a native site is marked growing only when the
verdict is a native leak.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any

from leakscope.model import sites as sitemod
from leakscope.model.runfile import Frame, Site

# Libraries whose frames are the allocator itself, not its caller: the native
# function named is the first frame past them.
_ALLOCATOR_LIBRARIES = ("libc.so", "libc-", "ld-linux", "libstdc++", "libgcc_s",
                        "libjemalloc", "libtcmalloc", "libmimalloc", "libSystem",
                        "libsystem_malloc", "libc++")
# Source directories of CPython's own C code, for frames whose library is unknown.
_INTERPRETER_SOURCES = ("Objects/", "Python/", "Modules/", "Parser/", "Include/",
                        "./Include/", "./Modules/", "./Objects/", "./Python/")
UNKNOWN = "<unknown>"


@dataclass
class Capture:
    """What the worker's memray window reported, and what became of it here."""

    sites: list[Site]
    note: str = ""
    # Python allocations kept by the window: (file, line) of the innermost frame
    # -> the full Python stack, innermost first, as (file, line) pairs; the stack
    # of the most bytes at that line. Deepens tracemalloc's short tracebacks.
    deep: dict[tuple[str, int], list[tuple[str, int]]] = field(default_factory=dict)


class _Symbols:
    """Which loaded library defines a function: ELF symbol tables, read lazily."""

    def __init__(self, libraries: list[str], executable: str) -> None:
        self.libraries = [executable] + [p for p in libraries if p != executable] \
            if executable else list(libraries)
        self.executable = executable
        self._tables: dict[str, tuple[bytes, set[int]] | None] = {}
        self._found: dict[str, str | None] = {}

    def library_of(self, function: str) -> str | None:
        if function in self._found:
            return self._found[function]
        needle = b"\0" + function.encode("utf-8", "replace") + b"\0"
        found = None
        for path in self.libraries:
            table = self._table(path)
            if table is None:
                continue
            strings, defined = table
            start = strings.find(needle)
            while start != -1:
                if start + 1 in defined:
                    found = path
                    break
                start = strings.find(needle, start + 1)
            if found:
                break
        self._found[function] = found
        return found

    def _table(self, path: str) -> tuple[bytes, set[int]] | None:
        if path not in self._tables:
            try:
                self._tables[path] = _read_elf_symbols(path)
            except (OSError, ValueError, struct.error):
                self._tables[path] = None
        return self._tables[path]


def _read_elf_symbols(path: str) -> tuple[bytes, set[int]] | None:
    """The string tables and the name offsets of defined functions of a 64-bit ELF file.

    Offsets are into the concatenation of the symbol tables' string tables
    (each padded with a NUL), so one ``find`` answers for both .symtab and
    .dynsym. Returns None for anything that is not a little-endian ELF64.
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            return None
        shoff = struct.unpack_from("<Q", m, 0x28)[0]
        shentsize, shnum = struct.unpack_from("<HH", m, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", m, shoff + i * shentsize)
                    for i in range(shnum)]
        strings = bytearray(b"\0")
        defined: set[int] = set()
        for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
            if kind not in (2, 11) or entsize != 24 or link >= len(sections):  # SYMTAB, DYNSYM
                continue
            str_offset, str_size = sections[link][4], sections[link][5]
            base = len(strings)
            strings += m[str_offset:str_offset + str_size] + b"\0"
            for st_name, st_info, _other, st_shndx, _value, _size in struct.iter_unpack(
                "<IBBHQQ", m[offset:offset + size - size % 24]
            ):
                if st_shndx != 0 and st_info & 0xF in (1, 2, 10):  # OBJECT, FUNC, IFUNC
                    defined.add(base + st_name)
        return bytes(strings), defined


def _is_allocator(library: str | None) -> bool:
    return library is not None and os.path.basename(library).startswith(_ALLOCATOR_LIBRARIES)


def _is_interpreter(library: str | None, source: str, executable: str) -> bool:
    if library is not None:
        name = os.path.basename(library)
        return library == executable or name.startswith("libpython")
    return source.startswith(_INTERPRETER_SOURCES)


def read_capture(info: dict[str, Any], display: Any = None) -> Capture:
    """The native sites of a memray window (``info`` as the worker sent it); never raises.

    The capture file is removed once read.
    """
    path = str(info.get("capture") or "")
    loops = int(info.get("loops") or 0)
    try:
        if not path or loops < 1:
            return Capture([], "memray window closed before a whole loop; located with "
                               "tracemalloc")
        try:
            from memray import FileReader
        except Exception as exc:  # noqa: BLE001
            return Capture([], f"memray is not importable by leakscope itself "
                               f"({type(exc).__name__}); native sites left out")
        try:
            reader = FileReader(path)
            records = list(reader.get_leaked_allocation_records(merge_threads=True))
        except Exception as exc:  # noqa: BLE001 - a capture from another memray version
            return Capture([], f"memray capture unreadable ({exc}); native sites left out")
        symbols = _Symbols(list(info.get("libraries") or []), str(info.get("executable") or ""))
        deep: dict[tuple[str, int], list[tuple[str, int]]] = {}
        sites = _sites(records, loops, symbols, display or (lambda f: f), deep)
        if not info.get("python_allocators"):
            # Python's allocations were seen only as pymalloc's arenas: their
            # stacks are whichever allocation opened an arena, not the line's.
            deep = {}
        return Capture(sites, deep=deep)
    finally:
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


def _sites(
    records: list[Any], loops: int, symbols: _Symbols, display: Any,
    deep: dict[tuple[str, int], list[tuple[str, int]]],
) -> list[Site]:
    groups: dict[tuple[str, int, str, str | None], list[Any]] = {}
    deep_size: dict[tuple[str, int], int] = {}
    for record in records:
        placed = _place(record, symbols)
        if placed is None:
            python = record.stack_trace()
            if len(python) > 1:
                line = (python[0][1], int(python[0][2]))
                if record.size > deep_size.get(line, -1):
                    deep_size[line] = record.size
                    deep[line] = [(f, int(n)) for _fn, f, n in python]
            continue
        python, function, library = placed
        at = next(((f, n, fn) for fn, f, n in python if sitemod.is_user_file(f)), None)
        if at is None:
            at = (python[0][1], python[0][2], python[0][0])
        group = groups.setdefault((at[0], at[1], function, library), [0, 0, python])
        group[0] += record.size
        group[1] += record.n_allocations
    result = []
    for (_file, _line, function, library), (size, blocks, python) in groups.items():
        traceback = [Frame(display(f), int(n), fn) for fn, f, n in python
                     if not sitemod.is_own_file(f)] or [Frame(display(python[0][1]),
                                                              int(python[0][2]), python[0][0])]
        user = next((frame for frame, (_fn, f, _n) in zip(traceback, python)
                     if sitemod.is_user_file(f)), None)
        top = user or traceback[0]
        result.append(Site(
            file=top.file, line=top.line, function=top.function, traceback=traceback,
            user_frame=user, bytes_per_iteration=round(size / loops, 1),
            blocks_per_iteration=round(blocks / loops, 2), growing=False, kept_bytes=size,
            kept_blocks=blocks, series=[], engine="memray",
            native={"function": function,
                    "library": os.path.basename(library) if library else UNKNOWN},
        ))
    result.sort(key=lambda s: s.kept_bytes, reverse=True)
    return result


def _place(record: Any, symbols: _Symbols) -> tuple[list[tuple], str, str | None] | None:
    """(Python frames innermost first, native function, library) of a native allocation.

    None for a Python allocation (the interpreter's own code allocated it),
    leakscope's own, or one made with no Python frame on the stack.
    """
    python = [tuple(frame) for frame in record.stack_trace()]
    if not python:
        return None
    first = next((f for _fn, f, _n in python
                  if sitemod.is_user_file(f) or sitemod.is_own_file(f)), None)
    if first is not None and sitemod.is_own_file(first):
        return None
    native: list[tuple] = []
    for frame in record.hybrid_stack_trace():
        if tuple(frame) == python[0]:
            break
        native.append(tuple(frame))
    for function, source, _line in native:
        library = symbols.library_of(function)
        if _is_allocator(library):
            continue
        if _is_interpreter(library, str(source), symbols.executable):
            return None
        return python, function, library
    return None
