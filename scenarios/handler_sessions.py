"""A Flask-style handler: a route decorator registers it, and each request stores the
session a helper builds in a module dict that nothing ever prunes.

Expected: leak=yes kind=reachable line=scenarios/handler_sessions.py:26
Holder: handler_sessions.SESSIONS role=registry added=scenarios/handler_sessions.py:32
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

ROUTES: dict[str, Callable[[dict], str]] = {}
SESSIONS: dict[str, dict] = {}
_ids = itertools.count()


def route(path: str) -> Callable:
    def register(view: Callable[[dict], str]) -> Callable[[dict], str]:
        ROUTES[path] = view
        return view
    return register


def new_session(user: str) -> dict:
    return {"user": user, "cart": [], "seen": f"{user}-{next(_ids)}"}


@route("/login")
def login(request: dict) -> str:
    sid = f"s{next(_ids):08d}"
    SESSIONS[sid] = new_session(request["user"])
    return sid


def iteration() -> None:
    ROUTES["/login"]({"user": "alice"})
