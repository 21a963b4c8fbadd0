"""What can be done to a team. Commands, admin actions, views and tasks all call these."""

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from credentials.tokens import rotate_team_token

from . import timeline
from .actions import action_for
from .backends import get_backend
from .models import Instance, Team, TeamAction
from .permissions import ADD_TEAM, CHANGE_TEAM, ROTATE_TOKEN, Actor, authorize
from .provisioning import instance_for, provision
from .tasks import provision_team, run_team_action

logger = logging.getLogger(__name__)

def create_team(slug: str, name: str = "", region: str = "", *, actor: Actor = "system") -> Team:
    """Create a team and enqueue its provisioning; raise ValidationError with a message per field (and
    PermissionDenied when `actor` is a user who may not add teams)."""
    actor = authorize(actor, ADD_TEAM)
    slug = slug.strip().lower()
    region = region.strip() or settings.REGIONS[0]
    if region not in settings.REGIONS:
        raise ValidationError({"region": f"'{region}' is not one of {', '.join(settings.REGIONS)}."})
    team = Team(slug=slug, name=name.strip() or slug, region=region)
    team.full_clean()
    with transaction.atomic():
        team.save()
        request_provisioning(team, actor=actor)
    return team


def request_provisioning(team: Team, *, actor: str) -> None:
    """Enqueue provisioning once the team's row is committed (the worker must be able to see it); its timeline
    events name `actor`, who asked for it."""
    transaction.on_commit(lambda: provision_team.enqueue(team.pk, actor=actor))


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


def stop_instance(team: Team, *, actor: str) -> None:
    """Stop the team's instance and keep it stopped (supervision leaves it alone)."""
    instance = instance_for(team)
    get_backend(instance.backend).stop(instance)
    instance.state = instance.desired_state = instance.State.STOPPED
    instance.save(update_fields=["state", "desired_state", "updated_at"])
    timeline.record(team, timeline.Kind.STOPPED, "instance stopped by an operator", actor=actor)


def destroy_instance(team: Team, *, actor: str) -> None:
    """Remove the team's compute and volume; its backups under team-<id>/ are kept."""
    instance = instance_for(team)
    instance.state = instance.desired_state = instance.State.DESTROYING
    instance.save(update_fields=["state", "desired_state", "updated_at"])
    get_backend(instance.backend).destroy(instance)
    instance.state = instance.State.DESTROYED
    instance.resources, instance.completed_steps, instance.url = {}, [], ""
    instance.save(update_fields=["state", "resources", "completed_steps", "url", "updated_at"])
    timeline.record(team, timeline.Kind.DESTROYED,
                    f"compute and volume removed; backups kept under {team.storage_prefix}", actor=actor,
                    data={"backups_kept_under": team.storage_prefix})


# --- operator actions (dashboard, admin) -------------------------------------------------------------------

def start_instance(team: Team, *, actor: str) -> None:
    """Start the team's instance: provisioning's idempotent steps adopt what exists and start the rest."""
    provision(team, actor=actor)


def restart_instance(team: Team, *, actor: str) -> None:
    """Stop the instance, then start it again through provisioning (it picks up the current token)."""
    instance = instance_for(team)
    get_backend(instance.backend).stop(instance)
    timeline.record(team, timeline.Kind.RESTARTING, "instance stopped for a restart", actor=actor)
    provision(team, actor=actor)


def request_action(team: Team, kind: str, *, actor: Actor) -> TeamAction:
    """Record an operator's action (one of `teams.actions.ACTIONS`) and queue it for the worker (never run
    inside a web request); a user needs the action's permission."""
    registered = action_for(kind)
    requested_by = authorize(actor, registered.permission)
    action = TeamAction.objects.create(team=team, kind=registered.kind, requested_by=requested_by)
    timeline.record(team, registered.requested_event,
                    f"{action.get_kind_display()} requested by {requested_by or 'system'}",
                    actor=requested_by or "system", data={"action": action.pk})
    transaction.on_commit(lambda: run_team_action.enqueue(action.pk))
    return action


def run_action(action_id: int) -> TeamAction:
    """The worker's side of `request_action`: run it, recording running, then succeeded or failed with why. The
    timeline names whoever requested the action: the worker acts for them."""
    action = TeamAction.objects.select_related("team").get(pk=action_id)
    TeamAction.objects.filter(pk=action.pk).update(status=TeamAction.Status.RUNNING, started_at=timezone.now())
    try:
        action_for(action.kind).perform(action.team, actor=action.requested_by or "system")
    except Exception as error:
        action.status, action.error = TeamAction.Status.FAILED, str(error) or type(error).__name__
        logger.warning("action %s on team %s failed: %s", action.kind, action.team_id, action.error)
    else:
        action.status = TeamAction.Status.SUCCEEDED
    action.finished_at = timezone.now()
    action.save(update_fields=["status", "error", "finished_at"])
    return action


def rotate_token(team: Team, *, actor: Actor) -> TeamAction | None:
    """Revoke the team's token (and its signal URLs) at once, then queue a restart so the instance runs with
    the new one. Returns the restart action, or None when there is no instance to restart."""
    requested_by = authorize(actor, ROTATE_TOKEN)
    rotate_team_token(team)
    timeline.record(team, timeline.Kind.TOKEN_ROTATED,
                    f"token rotated to generation {team.token_generation} by {requested_by or 'system'}",
                    actor=requested_by or "system", data={"generation": team.token_generation})
    instance = Instance.objects.filter(team=team).exclude(
        state__in=[Instance.State.DESTROYED, Instance.State.DESTROYING]).first()
    # The restart belongs to the rotation: whoever may rotate may restart for it.
    return request_action(team, TeamAction.Kind.RESTART, actor=requested_by) if instance else None
