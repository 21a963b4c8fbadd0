"""What the router changes: waking a team's instance (background work goes through the task worker)."""

from __future__ import annotations

from django.db import transaction

from instances.models import Instance, TeamAction
from instances.services import request_action

ROUTER_ACTOR = "router"


def wake_instance(team_id: int, *, actor: str = ROUTER_ACTOR) -> TeamAction | None:
    """Queue a start for a stopped or scaled-to-zero instance of an active team, unless an action is already
    queued or running for it (a start, a restart, a deploy's own): returns the action queued, or None.
    The worker starts it (teams.services.start_instance); the router only holds the request meanwhile."""
    with transaction.atomic():
        instance = Instance.objects.select_related("team").filter(team_id=team_id).first()
        if instance is None or not instance.team.is_active:
            return None
        if not (instance.state == Instance.State.STOPPED or instance.scaled_to_zero):
            return None
        if TeamAction.objects.filter(team_id=team_id, status__in=[TeamAction.Status.QUEUED,
                                                                   TeamAction.Status.RUNNING]).exists():
            return None
        return request_action(instance.team, TeamAction.Kind.START, actor=actor)
