"""FakeFly over real HTTP on 127.0.0.1, for end-to-end runs (`serve`, or `python -m fakefly`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .app import API_PREFIX, FakeFly

logger = logging.getLogger("fakefly")


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    # A `wait` request blocks for up to 60 s: each request needs its own thread, and none may delay shutdown.
    daemon_threads = True
    # wsgiref closes every connection after one answer, so a fleet run opens a connection per call; the default
    # backlog of 5 drops the excess and each dropped connect costs the client a 1 s SYN retry.
    request_queue_size = 1024


class _QuietRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def serve(fake: FakeFly | None = None, *, port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serves `fake` (a new one on wall-clock time by default) in a background thread on 127.0.0.1.
    Returns the API base URL (ending in /v1) and a function that stops the server."""
    server = make_server("127.0.0.1", port, fake or FakeFly(), server_class=_ThreadingWSGIServer,
                         handler_class=_QuietRequestHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakefly",
                              daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join()

    return f"http://127.0.0.1:{server.server_port}{API_PREFIX}", stop
