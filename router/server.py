"""`python -m router.server --bind HOST:PORT --mode embedded|fly`: the router (router/proxy.py) under uvicorn.

Django is set up for the ORM only (the routing table and, embedded, the wake): the router serves no Django URL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A connection's transport whose writes made in one turn of the event loop go out as one send.

    uvicorn writes an answer's status line and headers, each body message and a chunked answer's last chunk
    separately: three sends for a small answer the router passes on, each a system call and, on loopback, a
    wake-up of the client for a partial answer. What one turn writes is sent at the end of that turn (before
    anything closes the connection), so nothing waits longer than the turn that wrote it and what is held stays
    within what one turn wrote (the router's flow control still sees the real transport's buffer)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def __getattr__(self, name):  # the rest (reading, flow control, extra info) is the connection's own
        return getattr(self._transport, name)


class RouterHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its writes coalesced per turn of the event loop (CoalescingTransport)."""

    def connection_made(self, transport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT")
    parser.add_argument("--mode", choices=("embedded", "fly"), default="embedded")
    arguments = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")
    import django

    django.setup()
    import uvicorn

    from .proxy import Router

    host, _, port = arguments.bind.rpartition(":")
    uvicorn.run(Router(mode=arguments.mode), host=host.strip("[]") or "127.0.0.1", port=int(port),
                loop="uvloop", http=RouterHttpProtocol, lifespan="on", access_log=False, server_header=False,
                date_header=False, log_level="warning", timeout_keep_alive=30,
                # No X-Forwarded-* is believed from anyone: the router is the edge (embedded) or behind Fly's proxy,
                # and decides on the Host alone.
                proxy_headers=False)


if __name__ == "__main__":
    main()
