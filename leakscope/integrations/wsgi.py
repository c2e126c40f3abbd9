"""WSGI: one unit per request, ended when the server closes the response.

PEP 3333 has the server call ``close()`` on the response iterable once the
body is sent, whether the app returned a list or a generator; that is the
end of the request, and the tick comes right after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any


class TickingApp:
    """Wraps a WSGI app; calls ``done()`` after each response is closed."""

    def __init__(self, app: Callable[..., Iterable[bytes]], done: Callable[[], None]) -> None:
        self.app = app
        self.done = done

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.done()
            raise
        return _ClosingBody(body, self.done)


class _ClosingBody:
    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self.body = body
        self.done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.done()
