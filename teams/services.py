"""What can be done to a team. Commands, admin actions, views and tasks all call these."""

from django.core.exceptions import ValidationError
from django.db import transaction

from .backends import get_backend
from .models import Team
from .provisioning import instance_for, record_event
from .tasks import provision_team

def create_team(slug: str, name: str = "") -> Team:
    """Create a team and enqueue its provisioning; raise ValidationError with a message per field."""
    slug = slug.strip().lower()
    team = Team(slug=slug, name=name.strip() or slug)
    team.full_clean()
    with transaction.atomic():
        team.save()
        request_provisioning(team)
    return team


def request_provisioning(team: Team) -> None:
    """Enqueue provisioning once the team's row is committed (the worker must be able to see it)."""
    transaction.on_commit(lambda: provision_team.enqueue(team.pk))


def set_team_status(team: Team, status: str) -> Team:
    """Enable or disable a team; a disabled team gets no credentials."""
    team.status = Team.Status(status)
    team.save(update_fields=["status", "updated_at"])
    return team


def get_team(slug: str) -> Team:
    try:
        return Team.objects.get(slug=slug)
    except Team.DoesNotExist:
        raise ValidationError({"slug": f"no team with slug '{slug}'."}) from None


def stop_instance(team: Team) -> None:
    """Stop the team's instance and keep it stopped (supervision leaves it alone)."""
    instance = instance_for(team)
    get_backend(instance.backend).stop(instance)
    instance.state = instance.desired_state = instance.State.STOPPED
    instance.save(update_fields=["state", "desired_state", "updated_at"])
    record_event(team, "stopped", "instance stopped by an operator")


def destroy_instance(team: Team) -> None:
    """Remove the team's compute and volume; its backups under team-<id>/ are kept."""
    instance = instance_for(team)
    instance.state = instance.desired_state = instance.State.DESTROYING
    instance.save(update_fields=["state", "desired_state", "updated_at"])
    get_backend(instance.backend).destroy(instance)
    instance.state = instance.State.DESTROYED
    instance.resources, instance.completed_steps, instance.url = {}, [], ""
    instance.save(update_fields=["state", "resources", "completed_steps", "url", "updated_at"])
    record_event(team, "destroyed", f"compute and volume removed; backups kept under {team.storage_prefix}")
