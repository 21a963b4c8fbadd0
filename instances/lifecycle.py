"""What is done to a team's instance: start, stop, restart, destroy (provisioning in `provisioning.py`), and the
worker's side of an operator's action. Commands call these directly; views and the admin go through
`services.request_action`, which queues them for the worker."""

import logging

from django.utils import timezone

from teams import timeline
from teams.models import Team

from .actions import action_for
from .machines import get_backend
from .models import TeamAction
from .provisioning import instance_for, provision

logger = logging.getLogger(__name__)


def stop_instance(team: Team, *, actor: str) -> None:
    """Stop the team's instance and keep it stopped (the reconciler leaves it alone)."""
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


def run_action(action_id: int) -> TeamAction:
    """The worker's side of `services.request_action`: run it, recording running, then succeeded or failed with
    why. The timeline names whoever requested the action: the worker acts for them."""
    action = TeamAction.objects.select_related("team").get(pk=action_id)
    if action.is_done:
        # Its task ran again (its worker died after the action ended, before the task was marked done).
        return action
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
