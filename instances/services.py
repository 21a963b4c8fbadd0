"""What callers ask of a team's instance: each request is recorded and queued for the worker (`tasks.py`), never
run inside a web request. Commands, admin actions, views and the reconciler all call these."""

from django.db import transaction

from teams import timeline
from teams.models import Team
from teams.permissions import ADD_TEAM, Actor, authorize
from teams.services import create_team, rotate_token

from .models import Instance, TeamAction
from .actions import action_for
from .tasks import provision_team, run_team_action


def create_team_and_provision(slug: str, name: str = "", region: str = "", *, actor: Actor = "system") -> Team:
    """Create a team (`teams.services.create_team`: its checks, its ValidationError per field, PermissionDenied
    for a user who may not add teams) and enqueue its provisioning with it."""
    requested_by = authorize(actor, ADD_TEAM)
    with transaction.atomic():
        team = create_team(slug, name, region, actor=requested_by)
        request_provisioning(team, actor=requested_by)
    return team


def request_provisioning(team: Team, *, actor: str) -> None:
    """Enqueue provisioning once the team's row is committed (the worker must be able to see it); its timeline
    events name `actor`, who asked for it."""
    transaction.on_commit(lambda: provision_team.enqueue(team.pk, actor=actor))


def request_action(team: Team, kind: str, *, actor: Actor) -> TeamAction:
    """Record an operator's action (one of `actions.ACTIONS`) and queue it for the worker (`lifecycle.run_action`
    runs it); a user needs the action's permission."""
    registered = action_for(kind)
    requested_by = authorize(actor, registered.permission)
    action = TeamAction.objects.create(team=team, kind=registered.kind, requested_by=requested_by)
    timeline.record(team, registered.requested_event,
                    f"{action.get_kind_display()} requested by {requested_by or 'system'}",
                    actor=requested_by or "system", data={"action": action.pk})
    transaction.on_commit(lambda: run_team_action.enqueue(action.pk))
    return action


def rotate_token_and_restart(team: Team, *, actor: Actor) -> TeamAction | None:
    """Revoke the team's token (and its signal URLs) at once, then queue a restart so the instance runs with
    the new one. Returns the restart action, or None when there is no instance to restart."""
    requested_by = rotate_token(team, actor=actor)
    instance = Instance.objects.filter(team=team).exclude(
        state__in=[Instance.State.DESTROYED, Instance.State.DESTROYING]).first()
    # The restart belongs to the rotation: whoever may rotate may restart for it.
    return request_action(team, TeamAction.Kind.RESTART, actor=requested_by) if instance else None
