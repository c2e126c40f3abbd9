"""What every renderer is: a pure function of what a command produced, and one way to file it.

A renderer takes its subject (a ``Run``; a ``Comparison`` for ``diff``; the ``Decision`` list
of ``check``) and nothing else, and returns the output as text or bytes, as pyinstrument's
``renderers/base.py`` and memray's ``reporters`` do. It never recomputes a verdict and never
prints: the CLI prints text renderers' output, and ``write_output`` files a file renderer's
through ``atomic.write_atomic``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, TypeVar

from leakscope.model.atomic import write_atomic
from leakscope.model.errors import LeakscopeError

Subject = TypeVar("Subject", contravariant=True)


class Renderer(Protocol[Subject]):
    def render(self, subject: Subject, /) -> str | bytes:
        """The whole output for ``subject``; the same subject gives the same output."""
        ...


class FileRenderer(Renderer[Subject], Protocol):
    """A renderer whose output is a file of its own (``--html``, ``--junit``)."""

    # Names the file in the one error line: "cannot write HTML report PATH: REASON".
    what: str
    # The file's permissions: ``atomic.SHARED`` for a report meant to be passed around,
    # None for one readable by its owner only.
    mode: int | None


def write_output(
    renderer: FileRenderer[Subject], subject: Subject, path: str | os.PathLike[str],
) -> Path:
    """Render ``subject`` and write it atomically to ``path`` (making its directories).

    The output is rendered first, so that a renderer's error never leaves a file behind.
    A path that cannot be written (a full disk, a directory in the way) is one
    ``LeakscopeError`` line, exit code 2; the old file, if any, is left as it was.
    """
    target = Path(path)
    data = renderer.render(subject)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return write_atomic(target, data, mode=renderer.mode)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise LeakscopeError(f"cannot write {renderer.what} {target}: {reason}") from None
