"""Provisioning: take a team from nothing to a healthy instance, resumable after a crash at any point.

Every step is idempotent (it looks before it makes) and its result is saved before the next begins, so
running `provision` again simply walks the steps once more and finishes the job. A lease on the instance
row keeps two runs for the same team from overlapping.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from teams import timeline
from teams.models import Team

from . import rollouts
from .backends import BackendUnavailable
from .machines import get_backend
from .holders import claim_row, release_row
from .models import Instance

logger = logging.getLogger(__name__)

LEASE = timedelta(minutes=5)


class ProvisioningBusy(Exception):
    """Another run holds this team's lease."""


def instance_for(team: Team) -> Instance:
    # A callable default: the fleet image is looked up only when the instance is created.
    instance, _ = Instance.objects.get_or_create(
        team=team, defaults={"backend": settings.MACHINE_BACKEND, "image": rollouts.image_for_new_instances})
    return instance


def claim(instance: Instance) -> str:
    """Take the team's provisioning lease or raise ProvisioningBusy."""
    owner, holder = claim_row(Instance.objects.filter(pk=instance.pk), LEASE)
    if owner is None:
        raise ProvisioningBusy(f"team {instance.team_id} is being provisioned by {holder}")
    return owner


def release(instance: Instance, owner: str) -> None:
    release_row(Instance.objects.filter(pk=instance.pk), owner)


def _save(instance: Instance, **fields) -> None:
    for name, value in fields.items():
        setattr(instance, name, value)
    instance.save(update_fields=[*fields, "updated_at"])


def provision(team: Team, *, actor: str) -> Instance:
    """Walk every provisioning step; on failure the instance is FAILED with the reason, and re-running resumes (the
    reconciler does for a failure marked `retryable`: the platform unavailable, a Machine someone else held).
    `actor` (a username or process name) is recorded on each timeline event."""
    instance = instance_for(team)
    owner = claim(instance)
    try:
        _save(instance, state=Instance.State.PROVISIONING, desired_state=Instance.State.RUNNING, last_error="")
        backend_name = instance.backend.rsplit('.', 1)[-1]
        timeline.record(team, timeline.Kind.PROVISIONING, f"provisioning on {backend_name}", actor=actor,
                        data={"backend": backend_name})
        backend = get_backend(instance.backend)
        for step in backend.provisioning_steps():
            resources = step.run(instance)
            done = instance.completed_steps + ([step.name] if step.name not in instance.completed_steps else [])
            # Saving the step's outcome also extends the lease: a run that makes progress keeps the team.
            _save(instance, resources={**instance.resources, **resources}, completed_steps=done,
                  url=resources.get("url", instance.url), claimed_until=timezone.now() + LEASE)
            timeline.record(team, timeline.step_kind(step.name), f"{step.name} ready", actor=actor,
                            data={"step": step.name})
        _save(instance, state=Instance.State.RUNNING)
        timeline.record(team, timeline.Kind.RUNNING, f"instance answering at {instance.url}", actor=actor,
                        data={"url": instance.url})
        return instance
    except Exception as error:
        reason = str(error) or type(error).__name__
        _save(instance, state=Instance.State.FAILED, last_error=reason)
        timeline.record(team, timeline.Kind.PROVISIONING_FAILED, reason, actor=actor, is_error=True,
                        data={"completed_steps": instance.completed_steps,
                              "retryable": isinstance(error, BackendUnavailable)})
        raise
    finally:
        release(instance, owner)
