"""The ASGI entry of `python -m cloudctl.server`: Django's WSGI application behind a buffering front.

A request reaches Django only once its whole body has arrived: the body is read on the event loop (a coroutine
per connection, however slowly it comes), within CLOUDCTL_SERVER_BODY_TIMEOUT and CLOUDCTL_SERVER_MAX_BODY, and
then the complete request is run on a fixed pool of threads (a2wsgi) by the same WSGI application gunicorn
runs. A client that declares a body and trickles it therefore costs no thread, and the threads keep their
persistent database connections (Django's ASGI handler would open one per request, on a thread per request).
"""

import asyncio
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")

from a2wsgi import WSGIMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

from cloudctl.wsgi import application as wsgi_application  # noqa: E402


def error_response(status: int, message: str, **headers: str) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON error that also closes the connection (the request may be half read)."""
    body = json.dumps({"error": message}).encode()
    fields = {"content-type": "application/json", "content-length": str(len(body)), "cache-control": "no-store",
              "connection": "close", **headers}
    start = {"type": "http.response.start", "status": status,
             "headers": [(name.encode(), value.encode()) for name, value in fields.items()]}
    return start, {"type": "http.response.body", "body": body}


async def refuse(send, status: int, message: str) -> None:
    for event in error_response(status, message):
        await send(event)


def declared_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server's parser refuses such a request before the application sees it
    return None


class BufferedRequests:
    """Reads each HTTP request's whole body before the wrapped application sees the request.

    Over `max_body` bytes (declared or received) is a 413 and not reading the rest; a body not complete within
    `body_timeout` seconds of the headers is a 408; both close the connection. A client that goes away while
    sending is simply forgotten. The wrapped application gets the body as one message."""

    def __init__(self, app, *, body_timeout: float, max_body: int):
        self.app = app
        self.body_timeout = body_timeout
        self.max_body = max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body:
            return await refuse(send, 413, f"body over {self.max_body} bytes")
        chunks, size, more = [], 0, True
        try:
            async with asyncio.timeout(self.body_timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        return await refuse(send, 413, f"body over {self.max_body} bytes")
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            return await refuse(send, 408, f"request body not received within {self.body_timeout:g}s")
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        delivered = False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()  # only a disconnect can follow the body
            delivered = True
            return whole

        return await self.app(scope, replay, send)


def build_application():
    return BufferedRequests(WSGIMiddleware(wsgi_application, workers=settings.SERVER_THREADS),
                            body_timeout=settings.SERVER_BODY_TIMEOUT, max_body=settings.SERVER_MAX_BODY)


application = build_application()
