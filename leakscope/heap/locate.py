"""The line that grows a container: one loop under a line tracer on user frames."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from leakscope.heap.describe import LENGTHS, Container
from leakscope.heap.walk import classify
from leakscope.model import sites


class GrowthLocator:
    """For one loop, finds the user line that makes each growing holder longer.

    A line tracer checks the holders' lengths (C slots, O(1)) at every line
    event in the user's own files; when one changed, the user line that ran
    last did it, directly or through the library calls it made (an append
    inside ``logging.addHandler`` is charged to the user's ``addHandler``
    line; a value a user helper builds is charged to the caller's line that
    stores it, once the helper returns). Library frames get no line events,
    which keeps the one traced loop cheap. It runs for one extra loop after
    the measured ones, so its cost never reaches a measured figure.
    """

    def __init__(self, targets: list[Container]) -> None:
        self.targets: list[tuple[str, Any, Callable[[Any], int]]] = []
        for target in targets:
            length = LENGTHS.get(classify(type(target.obj)))
            if length is not None:
                self.targets.append((target.path, target.obj, length))
        self.lengths = [length(obj) for _, obj, length in self.targets]
        self.found: dict[str, list[list[Any]]] = {}
        self._last: tuple[types.FrameType, int] | None = None
        self._previous_trace: Callable[..., Any] | None = None
        self._patched: list[types.FrameType] = []
        self._user_files: dict[str, bool] = {}

    def _is_user(self, filename: str) -> bool:
        user = self._user_files.get(filename)
        if user is None:
            user = self._user_files[filename] = sites.is_user_file(filename)
        return user

    def _check(self) -> None:
        for i, (path, obj, length_of) in enumerate(self.targets):
            length = length_of(obj)
            if length != self.lengths[i]:
                if length > self.lengths[i] and path not in self.found and self._last:
                    self.found[path] = self._stack(*self._last)
                self.lengths[i] = length

    @staticmethod
    def _stack(frame: types.FrameType, line: int) -> list[list[Any]]:
        stack = [[frame.f_code.co_filename, line]]
        outer = frame.f_back
        while outer is not None and len(stack) < 12:
            stack.append([outer.f_code.co_filename, outer.f_lineno])
            outer = outer.f_back
        return stack

    def _local(self, frame: types.FrameType, event: str, arg: Any):
        self._check()
        if event == "line":
            self._last = (frame, frame.f_lineno)
        elif event == "return":
            # `CACHE[key] = build(key)`: the store runs after `build` returns,
            # with no new line event, so the line still running is the
            # caller's (the nearest user frame), not `build`'s last line.
            # With no user caller (a framework called the user's function),
            # what follows is the framework's, charged to the line that ran last.
            outer = frame.f_back
            while outer is not None and not self._is_user(outer.f_code.co_filename):
                outer = outer.f_back
            if outer is not None:
                self._last = (outer, outer.f_lineno)
        return self._local

    def _global(self, frame: types.FrameType, event: str, arg: Any):
        if not self._is_user(frame.f_code.co_filename):
            return None
        self._check()
        return self._local

    def start(self, caller: types.FrameType | None) -> None:
        self._previous_trace = sys.gettrace()
        sys.settrace(self._global)
        frame = caller
        while frame is not None:  # a tick script's loop is already running
            if self._is_user(frame.f_code.co_filename):
                frame.f_trace = self._local
                self._patched.append(frame)
            frame = frame.f_back

    def stop(self) -> dict[str, list[list[Any]]]:
        sys.settrace(self._previous_trace)
        for frame in self._patched:
            frame.f_trace = None
        self._patched.clear()
        self._check()
        self._last = None
        self.targets = []
        return self.found
