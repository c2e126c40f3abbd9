"""ASGI (uvicorn): one unit per HTTP request, ended when the app's call for it returns.

The app uvicorn loads (``Config.load``) is wrapped once; websocket and
lifespan scopes pass through uncounted. With ``--workers N`` uvicorn spawns
its workers, which inherit leakscope's environment and arm themselves.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Awaitable, Callable
from typing import Any


class TickingASGI:
    """Wraps an ASGI app; calls ``done()`` after each HTTP request's call returns."""

    def __init__(self, app: Callable[..., Awaitable[None]], done: Callable[[], None]) -> None:
        self.app = app
        self.done = done

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.done()


def on_import(agent: Any, name: str, module: types.ModuleType) -> None:
    config = module.Config
    load = config.load

    @functools.wraps(load)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        already = getattr(self, "loaded", False)
        result = load(self, *args, **kwargs)
        if not already and not isinstance(self.loaded_app, TickingASGI):
            self.loaded_app = TickingASGI(self.loaded_app, agent.unit_done)
            import multiprocessing

            spawned = multiprocessing.current_process().name != "MainProcess"
            agent.describe("uvicorn worker" if spawned else "uvicorn server",
                           unit="request", framework="uvicorn")
        return result

    config.load = wrapper
