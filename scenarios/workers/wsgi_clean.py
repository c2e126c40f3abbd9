"""A WSGI app whose per-request work is dropped when the request ends.

It parses the query, renders a page and caches rendered greetings in a
bounded ``functools.lru_cache``: memory fills the cache and then stays put.

Expected: leak=no kind=none
Command: gunicorn --chdir scenarios/workers -w 2 -k sync wsgi_clean:app
"""

import functools


@functools.lru_cache(maxsize=32)
def greeting(user: str) -> bytes:
    return f"hello {user}\n".encode()


def app(environ, start_response):
    user = environ.get("QUERY_STRING", "").partition("user=")[2] or "anonymous"
    rows = [{"n": i, "label": f"{user}-{i}"} for i in range(30)]
    body = greeting(str(len(rows) % 7)) + user.encode() + b"\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
