"""Reads of a team's instance that several rooms show (the dashboard's team page, the members' team page)."""

from teams.models import Team

from .models import Instance

RECENT_ACTIONS = 5


def instance_status(team: Team) -> dict:
    """What a team page polls to follow its instance: state, steps done, the recent actions and whether each is
    done (JSON-ready). `team` should come with its instance (`select_related("instance")`)."""
    instance: Instance | None = getattr(team, "instance", None)
    return {
        "team": team.slug,
        "state": instance.state if instance else "none",
        "state_display": instance.get_state_display() if instance else "not provisioned",
        "desired_state": instance.desired_state if instance else "",
        "url": instance.url if instance else "",
        "completed_steps": instance.completed_steps if instance else [],
        "last_error": instance.last_error if instance else "",
        "last_backup_at": instance.last_backup_at.isoformat() if instance and instance.last_backup_at else None,
        "actions": [{"id": action.pk, "kind": action.kind, "status": action.status, "error": action.error,
                     "done": action.is_done} for action in team.actions.all()[:RECENT_ACTIONS]],
    }
