"""Tasks a worker took and never finished.

django-tasks-db marks a task RUNNING with its worker's id when a worker takes it, and nothing looks at it again:
a worker killed mid-task (SIGKILL, the OOM killer, a lost machine) would leave it running for ever, and what it
was doing (a team's provisioning, an operator's action) would never be finished. Workers are named as every other
claim's holder (`host:pid:random`, `manage.py db_worker`'s default id, cloudctl/management/commands/db_worker.py),
so a task whose worker died on this host is queued again at once, and one whose worker is elsewhere once it has run
longer than `TASK_CLAIM_TIMEOUT`. What the tasks do is safe to run again: provisioning's steps are idempotent and
claim the team, an action that already ended is not run again (`lifecycle.run_action`).
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from .holders import holder_is_gone

logger = logging.getLogger(__name__)


def requeue_abandoned_tasks() -> list[str]:
    """Queue again every task left running by a worker that is gone; returns their ids."""
    expired = timezone.now() - timedelta(seconds=settings.TASK_CLAIM_TIMEOUT)
    requeued = []
    with transaction.atomic():
        for task in DBTaskResult.objects.select_for_update(skip_locked=True).filter(status=TaskResultStatus.RUNNING):
            worker = task.worker_ids[-1] if task.worker_ids else ""
            if holder_is_gone(worker) or (task.started_at is not None and task.started_at < expired):
                task.status = TaskResultStatus.READY
                task.save(update_fields=["status"])
                requeued.append(str(task.id))
                logger.warning("task %s (%s) left running by worker %s: queued again", task.id, task.task_path,
                               worker)
    return requeued
