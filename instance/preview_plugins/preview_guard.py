"""A restore preview answers only the control plane: every request must carry `X-Cloudctl-Preview` equal to the
CLOUDCTL_PREVIEW_SECRET it was started with (compared in constant time), else 403; only the platform's health check
(GET or HEAD of CLOUDCTL_HEALTH_CHECK_PATH, Datasette's versions) is answered without it. The preview serves a restored
volume read-only to staff and the team's admins through the control plane's pages (backups/preview.py); nothing
else reaches it, the router included. Loaded alone: none of the team's plugins run in a preview."""

import hmac
import os

from datasette import hookimpl

HEADER = b"x-cloudctl-preview"


def guard(app, secret: bytes, health_path: str):
    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            offered = dict(scope.get("headers") or []).get(HEADER, b"")
            is_health_check = scope["path"] == health_path and scope["method"] in ("GET", "HEAD")
            if not (is_health_check or hmac.compare_digest(offered, secret)):
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
    health_path = os.environ.get("CLOUDCTL_HEALTH_CHECK_PATH", "/-/versions.json")

    def wrap(app):
        # Without a secret yet (a restore Machine before its preview starts): nothing but the health check.
        return guard(app, secret or os.urandom(32), health_path)

    return wrap
