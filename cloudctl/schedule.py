"""The periodic tasks, declared once with their intervals (settings): `manage.py schedule_periodic`, run by
fly.toml's release command and by `manage.py dev`, queues each one that is on.

There is no scheduler process: a periodic task takes its interval as its argument and each run queues the
next after it (`instances.tasks.enqueue_again`). Queuing is safe on every deploy: a task with a run waiting gets
no second chain (`instances.tasks.schedule_periodic`); that run is retuned to the interval the settings give now,
so a changed interval, or 0 (off, that run being its last), takes effect with the deploy that changes it.
"""

from dataclasses import dataclass

from django.conf import settings
from django_tasks.base import Task, TaskResultStatus
from django_tasks_db.models import DBTaskResult

from credentials.tasks import prune_audit_trail
from backups.tasks import check_backups, drill_restores, tend_restores
from domains.tasks import check_certificate_status
from instances.tasks import reconcile_fleet, schedule_periodic
from sso.tasks import prune_single_sign_on


@dataclass(frozen=True)
class PeriodicTask:
    task: Task  # called with its interval in seconds; queues its next run after it
    setting: str  # the setting (CLOUDCTL_<setting> in the environment) that gives the interval; 0 turns it off
    minimum: int  # the shortest interval it takes, in seconds

    @property
    def every(self) -> int:
        return getattr(settings, self.setting)


SCHEDULE = (
    PeriodicTask(reconcile_fleet, "RECONCILE_EVERY", minimum=60),
    PeriodicTask(check_backups, "BACKUP_CHECK_EVERY", minimum=30),
    PeriodicTask(drill_restores, "DRILL_EVERY", minimum=60),
    PeriodicTask(tend_restores, "RESTORE_TEND_EVERY", minimum=60),
    PeriodicTask(prune_audit_trail, "AUDIT_PRUNE_EVERY", minimum=60),
    # Its own audit trail, expired codes and old grants: on the same interval as the private API's audit trail.
    PeriodicTask(prune_single_sign_on, "AUDIT_PRUNE_EVERY", minimum=60),
    PeriodicTask(check_certificate_status, "CERTIFICATE_CHECK_EVERY", minimum=60),
)


def interval_problems() -> list[str]:
    """What is wrong with the settings' intervals (checked by `manage.py check` and before queuing)."""
    return [f"CLOUDCTL_{periodic.setting} is {periodic.every}: 0 (off) or at least {periodic.minimum} seconds"
            for periodic in SCHEDULE if periodic.every != 0 and periodic.every < periodic.minimum]


def queue_schedule() -> list[str]:
    """Queue every periodic task that is on and has no run waiting; retune the waiting runs whose interval the
    settings changed. One line per task saying what was done (ValueError if an interval is wrong)."""
    if problems := interval_problems():
        raise ValueError("; ".join(problems))
    return [f"{periodic.task.name}: {_queue(periodic)}" for periodic in SCHEDULE]


def _queue(periodic: PeriodicTask) -> str:
    every = periodic.every
    if every and schedule_periodic(periodic.task, every):
        return f"queued, every {every} s"
    waiting = DBTaskResult.objects.filter(task_path=periodic.task.module_path, status=TaskResultStatus.READY)
    # A run queued without an interval (by hand) is a last run: it queues no next.
    retuned = [run.pk for run in waiting if (run.args_kwargs.get("args") or [0])[0] != every]
    waiting.filter(pk__in=retuned).update(args_kwargs={"args": [every], "kwargs": {}})
    what = f"every {every} s" if every else f"off (CLOUDCTL_{periodic.setting}=0)"
    if retuned:
        return f"already queued: retuned to {what}" + ("" if every else ", that run being the last")
    if not waiting.exists():
        return what
    return f"already queued, {what}: its chain goes on (nothing added)"
