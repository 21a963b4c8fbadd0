"""What a team's instance and its router share: the per-team routing secret and the instance's own host name.

The router sends the secret with every request it routes (Fly: the replay's `state`, which Fly's proxy copies into
`fly-replay-src`; the embedded router sets the same header); the instance serves only requests carrying its own
(instance/router_guard.py). It is derived, never stored: HMAC-SHA256 with `CLOUDCTL_ROUTER_KEY` over the team id.
Not over the token generation: a rotation restarts the instance through the worker, and until then the running
instance holds the secret it started with, so the router would get 403 for the rotation's gap. The secret only
proves a request came through the router (the instance itself knows it); a new `CLOUDCTL_ROUTER_KEY`, rolled out
with a deploy, renews every team's.
It lives beside the spec (instances/specs.py gives it to the instance) because teams imports no app above it.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings

# The variables the instance reads them from (instance/router_guard.py).
ROUTING_SECRET_VARIABLE = "CLOUDCTL_ROUTING_SECRET"
HOSTNAME_VARIABLE = "CLOUDCTL_HOSTNAME"
# The platform's health check (Fly's service check, the local backend's wait): the one path an instance
# answers without its router's secret.
HEALTH_CHECK_PATH = "/-/versions.json"
HEALTH_CHECK_PATH_VARIABLE = "CLOUDCTL_HEALTH_CHECK_PATH"


def routing_secret(team_id: int) -> str:
    """Hex, so it fits a `fly-replay` field without quoting (no `;`, `,`, `=` or space)."""
    message = f"cloudctl-routing-secret:{team_id}".encode()
    return hmac.new(settings.ROUTER_KEY.encode(), message, hashlib.sha256).hexdigest()


def team_hostname(slug: str) -> str:
    """The one name a team's instance answers to: `<slug>.<CLOUDCTL_TEAMS_DOMAIN>`."""
    return f"{slug}.{settings.TEAMS_DOMAIN}"


def team_url(slug: str) -> str:
    """The team's public URL, the router's: `https://<slug>.<domain>/`, or `http://<slug>.localhost:8080/` in the
    embedded stack."""
    port = f":{settings.TEAMS_URL_PORT}" if settings.TEAMS_URL_PORT else ""
    return f"{settings.TEAMS_URL_SCHEME}://{team_hostname(slug)}{port}/"
