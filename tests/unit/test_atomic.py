"""write_atomic: the target is replaced whole or not at all, and no temporary file is left."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from leakscope.model import atomic
from leakscope.model.atomic import SHARED, write_atomic


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("data", ["naïve text\n", b"\x00raw bytes\xff"], ids=["str", "bytes"])
def test_writes_a_new_file(tmp_path: Path, data: str | bytes) -> None:
    target = tmp_path / "out.txt"
    assert write_atomic(target, data) == target
    expected = data.encode("utf-8") if isinstance(data, str) else data
    assert target.read_bytes() == expected
    assert os.listdir(tmp_path) == ["out.txt"]


def test_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old, and longer than the new text\n")
    inode = target.stat().st_ino
    write_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_ino != inode, "renamed over the target, not rewritten in place"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_private_by_default(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_atomic(target, "{}")
    assert _mode(target) == 0o600


def test_shared_mode_follows_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    write_atomic(target, "<p>", mode=SHARED)
    assert _mode(target) == 0o666 & ~_umask()


def test_an_explicit_mode_is_reduced_by_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "f", "x", mode=0o666)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "f") == 0o640


def test_a_failed_write_keeps_the_target_and_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fills half-way: the old file stays whole, nothing else is left."""
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(OSError) as info:
        write_atomic(target, "new\n")
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_an_interrupt_removes_the_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(path: object, mode: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "chmod", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "out.txt", "new\n", mode=SHARED)
    assert os.listdir(tmp_path) == []


def test_text_that_cannot_be_encoded_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnicodeEncodeError):
        write_atomic(tmp_path / "out.txt", "lone surrogate \ud800")
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError) as info:
        write_atomic(missing / "out.txt", "x")
    assert info.value.filename == str(missing)
    assert info.value.strerror == "no such directory"
    assert os.listdir(tmp_path) == []


def test_a_directory_in_the_way_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "out.txt").mkdir()
    with pytest.raises(IsADirectoryError):
        write_atomic(tmp_path / "out.txt", "x")
    assert os.listdir(tmp_path) == ["out.txt"]
    assert os.listdir(tmp_path / "out.txt") == []


def test_a_file_in_place_of_the_directory_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError):
        write_atomic(tmp_path / "plain" / "out.txt", "x")
    assert os.listdir(tmp_path) == ["plain"]
