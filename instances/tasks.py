"""Background tasks (Django's Tasks API, run by `manage.py db_worker`). Each calls one function of the lifecycle;
what it changes is recorded as done by whoever queued it, else by the task ("task <name>").

Services queue these tasks and the tasks import only what does the work (`lifecycle`, `provisioning`,
`reconcile`), never the services: no import cycle."""

import logging

from django_tasks import task

from teams.models import Team

from .lifecycle import run_action
from .provisioning import ProvisioningBusy, provision
from .reconcile import reconcile
from .task_claims import requeue_abandoned_tasks

logger = logging.getLogger(__name__)


@task()
def provision_team(team_id: int, actor: str = "task provision_team") -> str:
    team = Team.objects.get(pk=team_id)
    try:
        return provision(team, actor=actor).state
    except ProvisioningBusy as busy:
        # The run holding the lease finishes the job; this one has nothing to do.
        logger.info("%s", busy)
        return "busy"


@task()
def reconcile_fleet(every_seconds: int = 0) -> int:
    """Reconcile once, after queuing again the tasks dead workers left running (one on another machine is noticed
    only here); with `every_seconds`, enqueue the next run (a periodic task without a scheduler)."""
    try:
        requeue_abandoned_tasks()
        return len(reconcile(actor="task reconcile_fleet"))
    finally:
        if every_seconds:
            enqueue_again(reconcile_fleet, every_seconds)


def enqueue_again(periodic_task, every_seconds: int) -> None:
    """A periodic task without a scheduler: each run queues the next, unless one is waiting already (queued
    by a release while this one ran: a second would double the chain)."""
    from datetime import timedelta

    from django.utils import timezone

    if not _run_waiting(periodic_task):
        periodic_task.using(run_after=timezone.now() + timedelta(seconds=every_seconds)).enqueue(every_seconds)


def schedule_periodic(periodic_task, every_seconds: int) -> bool:
    """Start `periodic_task`'s chain unless a run of it is already waiting, so that queuing it on every deploy
    (a release command) never doubles the chain. Returns whether it queued one."""
    if _run_waiting(periodic_task):
        return False
    periodic_task.enqueue(every_seconds)
    return True


def _run_waiting(periodic_task) -> bool:
    from django_tasks.base import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(task_path=periodic_task.module_path, status=TaskResultStatus.READY).exists()


@task()
def run_team_action(action_id: int) -> str:
    """An operator's action (start, stop, restart, destroy, provision) queued by `services.request_action`."""
    return run_action(action_id).status
