"""Serve a WSGI app quietly on a free loopback port in a daemon thread (the simulator, our app)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from werkzeug.serving import WSGIRequestHandler, make_server

POLL_INTERVAL = 0.05  # seconds; a short poll keeps close() quick: shutdown() waits for the loop


class QuietHandler(WSGIRequestHandler):
    """A request handler that logs no line per request (one per webhook would drown the output)."""

    def log_request(self, *args, **kwargs) -> None:
        pass


class LoopbackServer:
    """A WSGI app served on 127.0.0.1, on a port the OS picks, until close()."""

    def __init__(self, app, *, name: str = "loopback-server"):
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL_INTERVAL,), name=name, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._server.server_port

    @property
    def url(self) -> str:
        """The base URL, e.g. http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop serving, close the listening socket and wait for the thread to end."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def serve_in_thread(app, *, name: str = "loopback-server") -> Iterator[str]:
    """Serve a WSGI app on loopback while the block runs; yields its base URL."""
    with LoopbackServer(app, name=name) as server:
        yield server.url
