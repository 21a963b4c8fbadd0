"""The instance serves only requests its own router sent: the outermost layer of its Datasette, put there by
team_auth.py's `asgi_wrapper` (one hook, so that the order of the two never depends on the order plugins load in).
No Datasette import, so the router's tests use `guard` directly.

A request is passed to Datasette only when
- its `fly-replay-src` header (exactly one) carries `state=<this team's routing secret>`: Fly's proxy copies the
  router's replay `state` into it, the embedded router sets it the same way; compared in constant time, fields
  split on `;` and `,` (Fly's reference uses `;`, its blueprint `,`), and
- its `Host` (exactly one) is this instance's own name, `<slug>.<CLOUDCTL_TEAMS_DOMAIN>` (case, one trailing
  dot and a port aside).
Anything else gets `403` with a short text: a client spoofing the header, another tenant's app replaying to this
one (its router state is not ours), a request for another name. The platform's health check path
(`CLOUDCTL_HEALTH_CHECK_PATH`, GET or HEAD) is the one exception: Fly's checks and the local backend reach the
machine directly. It guards only when `CLOUDCTL_ROUTING_SECRET` and `CLOUDCTL_HOSTNAME` are set (the entrypoint
warns when they are not).
"""

from __future__ import annotations

import hmac

FORBIDDEN = b"403: this instance answers only requests routed to it by its router\n"


def replay_state(value: str) -> str | None:
    """The `state` field of a `fly-replay-src` value; None when absent or given twice."""
    states = []
    for field in value.replace(",", ";").split(";"):
        name, _, field_value = field.strip().partition("=")
        if name.strip().lower() == "state":
            states.append(field_value.strip())
    return states[0] if len(states) == 1 else None


def host_name(value: str) -> str:
    """`Acme.Example.com.:443` -> `acme.example.com`: the router's normalisation, for names it routed."""
    host = value.strip().lower()
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and not name.endswith("]"):
        host = name
    return host[:-1] if host.endswith(".") else host


def is_routed(headers: list[tuple[bytes, bytes]], secret: str, hostname: str) -> bool:
    hosts = [value for name, value in headers if name.lower() == b"host"]
    sources = [value for name, value in headers if name.lower() == b"fly-replay-src"]
    if len(hosts) != 1 or len(sources) != 1:
        return False
    state = replay_state(sources[0].decode("latin-1"))
    host_matches = host_name(hosts[0].decode("latin-1")) == hostname
    state_matches = state is not None and hmac.compare_digest(state.encode("latin-1"), secret.encode())
    return host_matches and state_matches


def guard(app, *, secret: str, hostname: str, health_path: str):
    async def guarded(scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        is_health_check = (scope["type"] == "http" and scope["path"] == health_path
                           and scope["method"] in ("GET", "HEAD"))
        if is_health_check or is_routed(scope["headers"], secret, hostname):
            return await app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(FORBIDDEN)).encode())]})
        await send({"type": "http.response.body", "body": FORBIDDEN})

    return guarded


def wrapper_from_environ(environ):
    """The guard as an ASGI wrapper for this instance's settings; None when it is not routed (the entrypoint's
    own tests), which the entrypoint warns about."""
    secret = environ.get("CLOUDCTL_ROUTING_SECRET", "").strip()
    hostname = host_name(environ.get("CLOUDCTL_HOSTNAME", ""))
    if not (secret and hostname):
        return None
    health_path = environ.get("CLOUDCTL_HEALTH_CHECK_PATH", "/-/versions.json")

    def wrap(app):
        return guard(app, secret=secret, hostname=hostname, health_path=health_path)

    return wrap
