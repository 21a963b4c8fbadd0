"""A restore drill asked for now (the console's "drill now"): recorded nowhere but in the queue, run by the worker
(`tasks.drill_team_task`, which records the drill as `drills.drill_team` does); never in the request, which a drill
of a large replica would hold for minutes."""

from teams.models import Team
from teams.permissions import RUN_DRILL, Actor, authorize

from .replicas import DEFAULT_DATABASE
from .tasks import drill_team_task


def request_drill(team: Team, *, actor: Actor) -> None:
    """Queue a drill of the team's latest backup of its database, run as (and recorded for) `actor`."""
    drill_team_task.enqueue(team.pk, authorize(actor, RUN_DRILL), DEFAULT_DATABASE)
