"""A restore preview answers only the control plane: every request must carry `X-Cloudctl-Preview` equal to the
CLOUDCTL_PREVIEW_SECRET it was started with (compared in constant time), else 403. The preview serves a restored
volume read-only to staff and the team's admins through the control plane's pages (backups/preview.py); nothing
else reaches it, the router included. Loaded alone: none of the team's plugins run in a preview."""

import hmac
import os

from datasette import hookimpl

HEADER = b"x-cloudctl-preview"


def guard(app, secret: bytes):
    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            offered = dict(scope.get("headers") or []).get(HEADER, b"")
            if not hmac.compare_digest(offered, secret):
                body = b"a restore preview answers only the control plane\n"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


@hookimpl
def asgi_wrapper(datasette):
    secret = os.environ.get("CLOUDCTL_PREVIEW_SECRET", "").encode()

    def wrap(app):
        if not secret:  # started without a secret: refuse everything rather than serve the team's rows
            return guard(app, os.urandom(32))
        return guard(app, secret)

    return wrap
