"""The ASGI entry of `python -m cloudctl.server`: Django's WSGI application behind a buffering front.

A request reaches Django only once its whole body has arrived: the body is read on the event loop (a coroutine
per connection, however slowly it comes), within CLOUDCTL_SERVER_BODY_TIMEOUT and CLOUDCTL_SERVER_MAX_BODY, and
then the complete request is run on a fixed pool of threads by the same WSGI application gunicorn runs. A client
that declares a body and trickles it therefore costs no thread, and the threads keep their persistent database
connections (Django's own ASGI handler would run each request's view on a new thread, with a new connection).
"""

import asyncio
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_to_bytes

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cloudctl.settings")

from django.conf import settings  # noqa: E402

from cloudctl.server import error_response  # noqa: E402
from cloudctl.wsgi import application as wsgi_application  # noqa: E402


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


def wsgi_environ(scope, body: bytes) -> dict:
    """The WSGI environ of a complete ASGI request, as gunicorn builds it: the path from the raw bytes (Django
    copes with what is not UTF-8), and header names with an underscore dropped, so that `Fly_Client_IP` cannot
    pass for `Fly-Client-IP` once both are HTTP_FLY_CLIENT_IP."""
    server_host, server_port = scope.get("server") or ("localhost", 80)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server_host,
        "SERVER_PORT": str(server_port or 0),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if scope.get("client"):
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = scope["client"][0], str(scope["client"][1])
    for raw_name, raw_value in scope["headers"]:
        name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
        if "_" in name:
            continue
        key = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}.get(name)
        key = key or "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class ThreadedWSGI:
    """Runs a WSGI application on a fixed pool of threads, one hop per request: the request is complete
    (BufferedRequests) and the answer is collected whole on the thread, then sent from the event loop. The
    control plane's answers are small JSON documents and pages."""

    def __init__(self, app, *, threads: int):
        self.app = app
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="django")

    def run(self, environ: dict) -> tuple[str, list, bytes]:
        started = {}
        chunks: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            started.update(status=status, headers=headers)
            return chunks.append

        result = self.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()  # Django's request_finished: this thread's database connection is looked after
        return started["status"], started["headers"], b"".join(chunks)

    async def __call__(self, scope, receive, send):
        message = await receive()
        environ = wsgi_environ(scope, message.get("body", b""))
        status, headers, body = await asyncio.get_running_loop().run_in_executor(self.pool, self.run, environ)
        await send({"type": "http.response.start", "status": int(status.split(" ", 1)[0]),
                    "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]})
        await send({"type": "http.response.body", "body": body})


def build_application():
    return BufferedRequests(ThreadedWSGI(wsgi_application, threads=settings.SERVER_THREADS),
                            body_timeout=settings.SERVER_BODY_TIMEOUT, max_body=settings.SERVER_MAX_BODY)


application = build_application()
