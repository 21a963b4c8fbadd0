"""A restore drill asked for now (the console's "drill now"): recorded nowhere but in the queue, run by the worker
(`tasks.drill_team_task`, which records the drill as `drills.drill_team` does); never in the request, which a drill
of a large replica would hold for minutes."""

from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from teams.models import Team
from teams.permissions import RUN_DRILL, Actor, authorize

from .replicas import DEFAULT_DATABASE
from .tasks import drill_team_task


def request_drill(team: Team, *, actor: Actor) -> bool:
    """Queue a drill of the team's latest backup of its database, run as (and recorded for) `actor`, unless one
    is already waiting for the worker (a second click adds nothing). Returns whether it queued one."""
    who = authorize(actor, RUN_DRILL)
    waiting = DBTaskResult.objects.filter(task_path=drill_team_task.module_path, status=TaskResultStatus.READY,
                                          args_kwargs__args__0=team.pk)
    if waiting.exists():
        return False
    drill_team_task.enqueue(team.pk, who, DEFAULT_DATABASE)
    return True
