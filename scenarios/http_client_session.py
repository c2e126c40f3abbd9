"""An HTTP client worker: `setup()` serves a small page from a ThreadingHTTPServer in
a thread, and each iteration opens a `requests.Session`, fetches the page and closes
the session. Nothing is kept; the server's threads allocate while the worker runs.

Expected: leak=no kind=none line=- verdict=undecided
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

_server: ThreadingHTTPServer | None = None
_url = ""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (the http.server name)
        body = b"ok" * 64
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def setup() -> None:
    global _server, _url
    _server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=_server.serve_forever, daemon=True).start()
    _url = f"http://127.0.0.1:{_server.server_address[1]}/"


def iteration() -> None:
    with requests.Session() as session:
        session.get(_url).raise_for_status()


def teardown() -> None:
    if _server is not None:
        _server.shutdown()
        _server.server_close()
