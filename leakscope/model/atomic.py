"""Writing a file so that no reader ever sees half of it: every file leakscope writes goes here.

The data goes to a temporary file beside the target, which is then renamed over it: a CI
step that reads the file, or a disk that fills half-way, finds the old file or the new
one, never a mix, and no temporary file is left behind (coverage.py ``report_core.py``,
``render_report``, removes its half-written report the same way).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# ``mode`` for a file meant to be shared, as ``open()`` would make it: the umask applies.
SHARED = 0o666


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(target: Path, data: str | bytes, *, mode: int | None = None) -> Path:
    """Replace ``target`` with ``data`` (text is written as UTF-8) and return ``target``.

    ``mode`` None leaves the file readable by its owner only (``tempfile.mkstemp``'s
    0600): a run file quotes the worker's paths and data. ``SHARED`` makes it as any
    new file would be (0666 less the umask), for a report meant to be passed around.

    The directory must exist. Any failure raises ``OSError`` and leaves ``target`` as it
    was, with no temporary file; the caller words the error (its own type, message and
    exit code). A missing directory is reported against the directory, not against the
    temporary file's random name.
    """
    # Here, not at the top: the measured process imports runfile (for its types), never
    # writes, and tempfile brings shutil, random and 1 MiB.
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "no such directory", str(target.parent)
        ) from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode("utf-8") if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(tmp, mode & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
