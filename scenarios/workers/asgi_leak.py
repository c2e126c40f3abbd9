"""An ASGI app that opens a "session" per request and files it in a module-level list.

Served by uvicorn: every HTTP request appends a session record to
``SESSIONS`` and nothing ever closes one.

Expected: leak=yes kind=reachable line=scenarios/workers/asgi_leak.py:18
Holder: asgi_leak.SESSIONS
Leaking: uvicorn server
Command: uvicorn --app-dir scenarios/workers --log-level warning asgi_leak:app
"""

SESSIONS: list = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    session = {"path": scope["path"], "query": scope["query_string"].decode(), "data": [0] * 10}
    SESSIONS.append(session)
    body = f"session {len(SESSIONS)}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
