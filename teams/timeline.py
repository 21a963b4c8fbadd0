"""The one writer of a team's timeline (`TeamEvent`): every service records what it changed, and who, here.

It imports only the models, so every module that changes a team can import it without an import cycle.
"""

import logging

from .models import Team, TeamEvent

logger = logging.getLogger(__name__)

Kind = TeamEvent.Kind


def record(team: Team, kind: Kind | str, message: str, *, actor: str, data: dict | None = None,
           is_error: bool = False) -> TeamEvent:
    """Append an event to `team`'s timeline (and the log). `kind` must be a `TeamEvent.Kind`; `actor` names the
    user or process that made the change; `data` holds what code may need to read back (never the message)."""
    kind = Kind(kind)
    if not actor:
        raise ValueError("a timeline event needs its actor")
    (logger.error if is_error else logger.info)("team=%s %s by %s: %s", team.pk, kind.value, actor, message)
    return TeamEvent.objects.create(team=team, kind=kind, actor=actor, message=message, data=data or {},
                                    is_error=is_error)


def step_kind(step_name: str) -> Kind:
    """The kind recording that provisioning step `step_name` is done (ValueError for a step without one)."""
    return Kind(f"step:{step_name}")
