"""A task whose worker died is run again, and what it does is not done twice (instances/task_claims.py)."""

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks.base import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from instances.lifecycle import run_action
from instances.models import TeamAction
from instances.provisioning import provision
from instances.services import request_action
from instances.task_claims import requeue_abandoned_tasks
from instances.tasks import reconcile_fleet
from teams.models import TeamEvent

pytestmark = pytest.mark.django_db


def dead_holder() -> str:
    process = subprocess.Popen(["true"])
    process.wait()
    return f"{socket.gethostname()}:{process.pid}:deadbeef"


def running(task_result, worker: str, *, started_ago=timedelta(0)) -> DBTaskResult:
    row = DBTaskResult.objects.get(pk=task_result.id)
    row.status, row.worker_ids, row.started_at = TaskResultStatus.RUNNING, [worker], timezone.now() - started_ago
    row.save()
    return row


def run_worker() -> None:
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)


@pytest.mark.django_db(transaction=True)  # the worker closes the connection between tasks
def test_a_task_left_running_by_a_dead_worker_runs_again_when_a_worker_starts(settings):
    settings.RECONCILE_EVERY = 0
    abandoned = running(reconcile_fleet.enqueue(), dead_holder())
    alive = running(reconcile_fleet.enqueue(), f"{socket.gethostname()}:{os.getpid()}:cafecafe")
    elsewhere = running(reconcile_fleet.enqueue(), "another-machine:1:0123abcd")
    run_worker()
    abandoned.refresh_from_db(), alive.refresh_from_db(), elsewhere.refresh_from_db()
    assert abandoned.status == TaskResultStatus.SUCCESSFUL
    assert len(abandoned.worker_ids) == 2
    assert (alive.status, elsewhere.status) == (TaskResultStatus.RUNNING, TaskResultStatus.RUNNING)


def test_a_task_running_past_the_claim_timeout_is_queued_again(settings):
    settings.TASK_CLAIM_TIMEOUT = 600
    recent = running(reconcile_fleet.enqueue(), "another-machine:1:0123abcd", started_ago=timedelta(seconds=590))
    expired = running(reconcile_fleet.enqueue(), "another-machine:1:0123abcd", started_ago=timedelta(seconds=610))
    assert requeue_abandoned_tasks() == [str(expired.id)]
    recent.refresh_from_db(), expired.refresh_from_db()
    assert (recent.status, expired.status) == (TaskResultStatus.RUNNING, TaskResultStatus.READY)


@pytest.mark.django_db(transaction=True)
def test_the_worker_is_named_as_a_holder_of_its_process():
    task = reconcile_fleet.enqueue()
    run_worker()
    assert DBTaskResult.objects.get(pk=task.id).worker_ids[0].startswith(f"{socket.gethostname()}:{os.getpid()}:")


def test_an_action_that_ended_is_not_run_again_by_its_task_run_twice(fly, make_team):
    team = make_team()
    provision(team, actor="test")
    action = request_action(team, TeamAction.Kind.STOP, actor="test")
    run_action(action.pk)
    finished = TeamAction.objects.get(pk=action.pk)
    run_action(action.pk)
    assert TeamAction.objects.get(pk=action.pk).finished_at == finished.finished_at
    assert TeamEvent.objects.filter(team=team, kind=TeamEvent.Kind.STOPPED).count() == 1
