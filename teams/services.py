"""What can be done to a team itself. Commands, admin actions, views and the instances app all call these; what
is done to its instance (provisioning, actions, the restart after a rotation) is `instances.services`."""

from django.conf import settings
from django.core.exceptions import ValidationError

from . import timeline
from .models import Team
from .permissions import ADD_TEAM, CHANGE_TEAM, ROTATE_TOKEN, Actor, authorize
from .tokens import rotate_team_token


def create_team(slug: str, name: str = "", region: str = "", *, actor: Actor = "system") -> Team:
    """Create a team; raise ValidationError with a message per field (and PermissionDenied when `actor` is a user
    who may not add teams). `instances.services.create_team_and_provision` also queues its provisioning."""
    authorize(actor, ADD_TEAM)
    slug = slug.strip().lower()
    region = region.strip() or settings.REGIONS[0]
    if region not in settings.REGIONS:
        raise ValidationError({"region": f"'{region}' is not one of {', '.join(settings.REGIONS)}."})
    team = Team(slug=slug, name=name.strip() or slug, region=region)
    team.full_clean()
    team.save()
    return team


def set_team_status(team: Team, status: str, *, actor: Actor) -> Team:
    """Enable or disable a team; a disabled team gets no credentials."""
    authorize(actor, CHANGE_TEAM)
    team.status = Team.Status(status)
    team.save(update_fields=["status", "updated_at"])
    return team


def get_team(slug: str) -> Team:
    try:
        return Team.objects.get(slug=slug)
    except Team.DoesNotExist:
        raise ValidationError({"slug": f"no team with slug '{slug}'."}) from None


def rotate_token(team: Team, *, actor: Actor) -> str:
    """Revoke the team's token (and its signal URLs) at once; returns the name recorded for `actor`. The instance
    still holds the old token until it restarts: `instances.services.rotate_token_and_restart` does both."""
    requested_by = authorize(actor, ROTATE_TOKEN)
    rotate_team_token(team)
    timeline.record(team, timeline.Kind.TOKEN_ROTATED,
                    f"token rotated to generation {team.token_generation} by {requested_by or 'system'}",
                    actor=requested_by or "system", data={"generation": team.token_generation})
    return requested_by
