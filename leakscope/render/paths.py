"""How a file is named on screen: short enough for a terminal, exact enough to open.

The run file keeps paths as the worker saw them (absolute for installed
packages); renderers show them as memray does: an installed package or a
standard-library module by its import path (``requests/structures.py``,
``urllib/parse.py``), the user's own file relative to the working directory.
One function, so every renderer names a file the same way.
"""

from __future__ import annotations

import os
import re

# Everything up to the last site-packages (or Debian's dist-packages), or up to
# the standard library's own directory (lib/python3.11, lib/python3.13t, lib/pypy3.10).
_LIBRARY_ROOT = re.compile(
    r"^.*[/\\](?:site-packages|dist-packages)[/\\]"
    r"|^.*[/\\]lib[/\\](?:python|pypy)\d+(?:\.\d+)?t?[/\\]"
)
# ``file:line`` as holders record where a container grew.
_LOCATION = re.compile(r"^(?P<file>.+):(?P<line>\d+)$")


def short_path(file: str) -> str:
    """``file`` as a person reads it; paths that are not library or local stay as they are."""
    if not file or file.startswith("<"):
        return file
    shortened = _LIBRARY_ROOT.sub("", file)
    if shortened != file and shortened:
        return shortened
    if os.path.isabs(file):
        try:
            cwd = os.getcwd()
        except OSError:  # the working directory was removed
            return file
        if file.startswith(cwd.rstrip(os.sep) + os.sep):
            return os.path.relpath(file, cwd)
    return file


def short_location(location: str) -> str:
    """A ``file:line`` string with its file shortened; anything else unchanged."""
    match = _LOCATION.match(location)
    if match is None:
        return location
    return f"{short_path(match.group('file'))}:{match.group('line')}"


def site_location(file: str, line: int) -> str:
    """The ``file:line`` renderers print for a site or a frame."""
    return f"{short_path(file)}:{line}"
