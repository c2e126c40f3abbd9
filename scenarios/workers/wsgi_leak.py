"""A WSGI app that keeps a metric series per user: one new label value per request.

The "metric labels per user" disease: every distinct user id becomes a key of
a module-level dict that nothing ever prunes. Served by gunicorn with two
sync workers, each worker leaks on the requests it serves; the master serves
none.

Expected: leak=yes kind=reachable line=scenarios/workers/wsgi_leak.py:19
Holder: wsgi_leak.REQUESTS_BY_USER
Leaking: gunicorn worker
Command: gunicorn --chdir scenarios/workers -w 2 -k sync wsgi_leak:app
"""

REQUESTS_BY_USER: dict = {}


def app(environ, start_response):
    user = environ.get("QUERY_STRING", "").partition("user=")[2] or "anonymous"
    series = REQUESTS_BY_USER.setdefault(user, {"user": user, "count": 0})
    series["count"] += 1
    REQUESTS_BY_USER[user]["history"] = [environ.get("PATH_INFO", "/")] * 8
    body = f"hello {user}: {series['count']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
