"""`python -m cloudctl.server --bind HOST:PORT [--workers N]`: the server of the private API (and of the embedded
stack), safe to face hostile clients without a proxy in front.

uvicorn (httptools, uvloop) runs `cloudctl.asgi:application`, which reads every request's body on the event loop before
Django runs the complete request on a thread. What uvicorn does not do itself happens in this module, at the
connection level where an ASGI application cannot see: a deadline for each request's headers (from the start
of the connection, or the end of the previous answer) and a cap on the connections one address holds open.
Limits and timeouts come from the settings (CLOUDCTL_SERVER_*, see README "Serving"). No access log: instance
signal URLs carry a signed value in their path.
"""

import argparse
import json
import os
import socket
from collections import Counter
from http import HTTPStatus

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")

KEEP_ALIVE_SECONDS = 5


def error_response(status: int, message: str, **headers: str) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON error that also closes the connection (the request may be half read)."""
    body = json.dumps({"error": message}).encode()
    fields = {"content-type": "application/json", "content-length": str(len(body)), "cache-control": "no-store",
              "connection": "close", **headers}
    start = {"type": "http.response.start", "status": status,
             "headers": [(name.encode(), value.encode()) for name, value in fields.items()]}
    return start, {"type": "http.response.body", "body": body}


def raw_error(status: int, message: str, **headers: str) -> bytes:
    """The same error as bytes on the wire, for a connection answered before any request was read."""
    start, body = error_response(status, message, **headers)
    head = b"".join(name + b": " + value + b"\r\n" for name, value in start["headers"])
    return f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode() + head + b"\r\n" + body["body"]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol plus a per-source connection cap and a request-head deadline."""

    # Connections open per source address in this worker process (one event loop: no lock needed).
    open_per_source: Counter = Counter()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from django.conf import settings

        self.header_timeout = settings.SERVER_HEADER_TIMEOUT
        self.connections_per_source = settings.SERVER_CONNECTIONS_PER_SOURCE
        self.counted_source: str | None = None
        self.head_deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        source = self.client[0] if self.client else None
        if source is not None and self.connections_per_source:
            if self.open_per_source[source] >= self.connections_per_source:
                transport.write(raw_error(429, "too many connections from this address", **{"retry-after": "1"}))
                transport.close()
                return
            self.open_per_source[source] += 1
            self.counted_source = source
        self.await_request_head()

    def connection_lost(self, exc) -> None:
        self.stop_head_deadline()
        if self.counted_source is not None:
            self.open_per_source[self.counted_source] -= 1
            if not self.open_per_source[self.counted_source]:
                del self.open_per_source[self.counted_source]
            self.counted_source = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.stop_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.await_request_head()

    def await_request_head(self) -> None:
        self.stop_head_deadline()
        self.head_deadline = self.loop.call_later(self.header_timeout, self.head_too_slow)

    def stop_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def head_too_slow(self) -> None:
        self.head_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request is being answered (a pipelined one started): its own answer re-arms the deadline
        self.transport.write(raw_error(408, f"request headers not received within {self.header_timeout:g}s"))
        self.transport.close()


def resolved_host(host: str) -> str:
    """An address literal for `host`: uvicorn picks the socket family from the literal, and Fly's private
    address comes as the name `fly-local-6pn` (IPv6)."""
    *_, address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
    return address[0]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cloudctl.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", required=True, help="HOST:PORT (HOST may be a name, e.g. fly-local-6pn)")
    parser.add_argument("--workers", type=int, default=2, help="processes (each runs CLOUDCTL_SERVER_THREADS threads)")
    parser.add_argument("--backlog", type=int, default=2048)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    args.host, args.port = resolved_host(host.strip("[]")), int(port)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    uvicorn.run(
        "cloudctl.asgi:application", host=args.host, port=args.port, workers=args.workers, backlog=args.backlog,
        http=GuardedHttpToolsProtocol, ws="none", interface="asgi3", lifespan="off", loop="uvloop",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        # Only the connecting address counts: nothing a client sends may claim another one.
        proxy_headers=False, server_header=False, access_log=False, log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
