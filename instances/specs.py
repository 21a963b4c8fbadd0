"""What a team's instance is given to run, whatever the backend: the one definition of its environment and secrets.

Backends receive an `InstanceSpec` (through `MachineBackend.spec_for`, which is `build_spec` unless a caller passes
another) and add only what depends on where the instance runs: where its data lives (`DATA_DIR`), the port it
listens on (`PORT`) and, for the local backend, the process basics (`PATH`, `HOME`, the bind address). None of
them makes a token: `build_spec` is the only caller of `teams.tokens.team_token` in the apps that run instances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings

from teams.routing import (
    HEALTH_CHECK_PATH, HEALTH_CHECK_PATH_VARIABLE, HOSTNAME_VARIABLE, ROUTING_SECRET_VARIABLE, routing_secret,
    team_hostname, team_url,
)
from teams.tokens import team_token

if TYPE_CHECKING:
    from .models import Instance

# The variable the instance reads its team token from (instance/entrypoint.py).
TOKEN_VARIABLE = "CLOUDCTL_TOKEN"


@dataclass(frozen=True)
class InstanceSpec:
    """`env` holds nothing secret (a Fly Machine's config shows it in clear); `secrets` must reach the instance
    only as secrets (Fly app secrets, the local process's own environment), never a log line or a Machine's
    config, so it is left out of the repr. `region` and `guest` are the Fly placement and size;
    `health_check_path` is what the platform probes (the one path the instance's router guard leaves open)."""

    team_id: int
    image: str
    region: str
    guest: Mapping[str, Any]
    env: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    health_check_path: str = HEALTH_CHECK_PATH


def build_spec(instance: Instance) -> InstanceSpec:
    """The instance as its backend must run it now: on `instance.image`, with the team's current token."""
    env = {
        "CLOUDCTL_URL": settings.PRIVATE_API_URL,
        "CLOUDCTL_TEAM_ID": str(instance.team_id),
        "CLOUDCTL_INSTANCE_VERSION": instance.image,
        "CLOUDCTL_S3_REGION": settings.INSTANCE_S3_REGION,
        "CLOUDCTL_MAX_AGE": settings.INSTANCE_MAX_AGE,
        "CLOUDCTL_IDLE_TIMEOUT": settings.INSTANCE_IDLE_TIMEOUT,
        "CLOUDCTL_BACKUP_RETENTION": settings.BACKUP_RETENTION,
        # The instance serves only requests its router sent, for this name (instance/router_guard.py).
        HOSTNAME_VARIABLE: team_hostname(instance.team.slug),
        HEALTH_CHECK_PATH_VARIABLE: HEALTH_CHECK_PATH,
        # Single sign-on (docs/sso.md): the instance sends anonymous visitors to the control plane's authorize
        # endpoint, to come back at <its URL>-/sso/callback, and re-validates each actor this often.
        "CLOUDCTL_TEAM_URL": team_url(instance.team.slug),
        "CLOUDCTL_SSO_AUTHORIZE_URL": f"{settings.PUBLIC_URL}/sso/authorize",
        "CLOUDCTL_SSO_REVALIDATE_SECONDS": str(settings.SSO_REVALIDATE_SECONDS),
    }
    if settings.INSTANCE_S3_ENDPOINT:
        env["CLOUDCTL_S3_ENDPOINT"] = settings.INSTANCE_S3_ENDPOINT
    return InstanceSpec(
        team_id=instance.team_id,
        image=instance.image,
        # Teams made before regions could be chosen use the default.
        region=instance.team.region or settings.FLY_REGION,
        guest=dict(settings.FLY_GUEST),
        env=env,
        secrets={TOKEN_VARIABLE: team_token(instance.team),
                 ROUTING_SECRET_VARIABLE: routing_secret(instance.team_id)},
    )
