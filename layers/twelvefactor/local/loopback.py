"""One lifecycle for the dev servers that listen on loopback (gateway, Slack stand-in)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer:
    """Serves a request handler class from a background thread; bound at construction, so a busy
    port fails at once, and `url` is known before the server starts."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], *, name: str, host: str = "127.0.0.1", port: int = 0
    ):
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
