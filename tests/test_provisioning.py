"""The provisioning state machine, its lease, the real database task worker, and supervision."""

import os
import socket
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from instances.backends import BackendError, MachineBackend, ObservedState, Step
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import ProvisioningBusy, claim, instance_for, provision
from instances.services import create_team_and_provision
from instances.supervision import supervise
from teams.models import TeamEvent

BACKEND = "tests.test_provisioning.ScriptedBackend"


class ScriptedBackend(MachineBackend):
    """Records what it made; can be told to fail a step or report a state."""

    def __init__(self):
        self.made = []
        self.fail_at = None
        self.observed = ObservedState.RUNNING

    def _step(self, name, resources):
        def run(instance):
            if self.fail_at == name:
                raise BackendError(f"{name} exploded")
            if name not in instance.resources.get("made", []):
                self.made.append((instance.team_id, name))
            return {**resources, "made": [*instance.resources.get("made", []), name]}
        return Step(name, run)

    def provisioning_steps(self):
        return [self._step("volume", {"volume": "vol-1"}), self._step("machine", {"machine": "m-1"}),
                self._step("healthy", {"url": "http://team.test/"})]

    def observe(self, instance):
        return self.observed

    def log_tail(self, instance, lines=15):
        return "boom"

    def start(self, instance):
        return {}

    def stop(self, instance):
        pass

    def destroy(self, instance):
        pass

    def update(self, instance, image, *, before_change=None):
        return {}

    def running_image(self, instance):
        return instance.image


@pytest.fixture
def backend(settings):
    settings.MACHINE_BACKEND = BACKEND
    get_backend.cache_clear()
    yield get_backend(BACKEND)
    get_backend.cache_clear()


def test_provision_walks_every_step_and_saves_each(backend, make_team):
    team = make_team()
    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert instance.completed_steps == ["volume", "machine", "healthy"]
    assert instance.resources["machine"] == "m-1"
    assert instance.url == "http://team.test/"
    assert backend.made == [(team.pk, "volume"), (team.pk, "machine"), (team.pk, "healthy")]
    kinds = list(TeamEvent.objects.filter(team=team).order_by("id").values_list("kind", flat=True))
    assert kinds == ["provisioning", "step:volume", "step:machine", "step:healthy", "running"]


def test_a_failed_step_is_recorded_and_a_rerun_finishes_without_remaking(backend, make_team):
    team = make_team()
    backend.fail_at = "machine"
    with pytest.raises(BackendError):
        provision(team, actor="test")
    instance = instance_for(team)
    assert instance.state == Instance.State.FAILED
    assert instance.last_error == "machine exploded"
    assert instance.completed_steps == ["volume"]
    assert TeamEvent.objects.get(team=team, is_error=True).message == "machine exploded"
    assert not instance.claimed_by  # the lease is released on failure

    backend.fail_at = None
    instance = provision(team, actor="test")
    assert instance.state == Instance.State.RUNNING
    assert instance.last_error == ""
    assert backend.made.count((team.pk, "volume")) == 1


def test_a_live_lease_holder_blocks_a_second_run(backend, make_team):
    team = make_team()
    instance = instance_for(team)
    claim(instance)  # held by this (live) process
    with pytest.raises(ProvisioningBusy):
        provision(team, actor="test")


def test_an_expired_lease_is_taken_over(backend, make_team):
    team = make_team()
    instance = instance_for(team)
    Instance.objects.filter(pk=instance.pk).update(
        claimed_by="elsewhere:1:x", claimed_until=timezone.now() - timedelta(seconds=1))
    assert provision(team, actor="test").state == Instance.State.RUNNING


def test_a_lease_held_by_a_killed_process_on_this_host_is_taken_over(backend, make_team):
    team = make_team()
    instance = instance_for(team)
    dead = subprocess.Popen(["true"])
    dead.wait()
    Instance.objects.filter(pk=instance.pk).update(
        claimed_by=f"{socket.gethostname()}:{dead.pid}:x", claimed_until=timezone.now() + timedelta(minutes=5))
    assert provision(team, actor="test").state == Instance.State.RUNNING


def test_a_lease_held_by_another_host_is_respected_until_it_expires(backend, make_team):
    team = make_team()
    instance = instance_for(team)
    Instance.objects.filter(pk=instance.pk).update(
        claimed_by=f"other-host:{os.getpid()}:x", claimed_until=timezone.now() + timedelta(minutes=5))
    with pytest.raises(ProvisioningBusy):
        provision(team, actor="test")


def test_create_team_enqueues_provisioning_for_the_database_worker(backend, transactional_db):
    team = create_team_and_provision("queued")
    task = DBTaskResult.objects.get()
    assert task.args_kwargs["args"] == [team.pk]
    assert not Instance.objects.filter(team=team, state=Instance.State.RUNNING).exists()
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)
    assert instance_for(team).state == Instance.State.RUNNING
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"


def test_a_failed_task_leaves_the_reason_on_the_instance(backend, transactional_db):
    backend.fail_at = "healthy"
    team = create_team_and_provision("failing")
    call_command("db_worker", "--batch", "--no-startup-delay", "--no-reload", verbosity=0)
    assert instance_for(team).last_error == "healthy exploded"
    assert DBTaskResult.objects.get().status == "FAILED"


def test_supervision_restarts_a_crashed_instance_and_gives_up_on_a_crash_loop(
    backend, make_team, django_capture_on_commit_callbacks
):
    team = make_team()
    provision(team, actor="test")
    DBTaskResult.objects.all().delete()
    backend.observed = ObservedState.CRASHED
    for attempt in range(3):
        Instance.objects.filter(team=team).update(state=Instance.State.RUNNING)
        with django_capture_on_commit_callbacks(execute=True):
            actions = supervise(BACKEND, actor="test")
        expected = "restart queued" if attempt < 2 else "crash loop"
        assert expected in actions[0]
    instance = instance_for(team)
    assert instance.state == Instance.State.FAILED
    assert TeamEvent.objects.filter(team=team, kind="crashed").count() == 3
    assert DBTaskResult.objects.count() == 2


def test_supervision_leaves_running_and_stopped_on_purpose_alone(backend, make_team):
    running, stopped = make_team(), make_team()
    provision(running, actor="test")
    provision(stopped, actor="test")
    Instance.objects.filter(team=stopped).update(desired_state=Instance.State.STOPPED, state=Instance.State.STOPPED)
    backend.observed = ObservedState.RUNNING
    assert supervise(BACKEND, actor="test") == []
    backend.observed = ObservedState.STOPPED
    assert supervise(BACKEND, actor="test") == [f"{running.slug}: stopped, restart queued"]


def test_supervision_leaves_alone_the_teams_a_running_deployment_is_restarting(backend, make_team):
    """A deploy stops and starts the instances it updates: restarting one under it would race its own start
    (on the image the database still names) and count its failed starts toward a crash loop."""
    from deploys.models import Deployment, DeploymentTarget
    from instances.holders import new_holder

    updating, rolling_back, done = make_team(), make_team(), make_team()
    for team in (updating, rolling_back, done):
        provision(team, actor="test")
    deployment = Deployment.objects.create(image="v2", canary=1, concurrency=2, max_failures=0,
                                           claimed_by=new_holder(), claimed_until=timezone.now() + timedelta(minutes=1))
    for team, step in ((updating, "updating"), (rolling_back, "rolling_back"), (done, "updated")):
        DeploymentTarget.objects.create(deployment=deployment, team=team, wave=0, step=step)
    backend.observed = ObservedState.CRASHED
    assert supervise(BACKEND, actor="test") == [f"{done.slug}: crashed, restart queued"]
    # The deployment's run died (its claim ran out): its teams are watched again.
    Instance.objects.filter(team=done).update(state=Instance.State.RUNNING)
    Deployment.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    assert sorted(supervise(BACKEND, actor="test")) == sorted(f"{team.slug}: crashed, restart queued"
                                                for team in (updating, rolling_back, done))


def test_a_just_started_local_instance_is_seen_alive(make_team, settings, tmp_path, monkeypatch):
    """Liveness is read from /proc (pid file, process group, the process's own CLOUDCTL_TEAM_ID), also for a
    child that was slow to exec."""
    from instances.machines import build_backend

    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nexec sleep 30\n")
    fake_python.chmod(0o755)
    settings.LOCAL_INSTANCE_PYTHON = str(fake_python)
    settings.LOCAL_INSTANCES_DIR = tmp_path / "instances"
    real_popen = subprocess.Popen

    def slow_to_exec(*args, **kwargs):
        # Runs in the child between fork and exec: the window in which /proc shows the parent's environment.
        return real_popen(*args, preexec_fn=lambda: time.sleep(0.2), **kwargs)

    monkeypatch.setattr("instances.backends.local.subprocess.Popen", slow_to_exec)
    backend = build_backend("instances.backends.local.LocalBackend")
    team = make_team()
    instance = instance_for(team)
    try:
        for _ in range(3):
            instance.resources.update(backend.ensure_running(instance))
            assert backend.observe(instance) is ObservedState.RUNNING
            backend.stop(instance)
            assert backend.observe(instance) is ObservedState.STOPPED
    finally:
        backend.stop(instance)


def test_reconcile_instance_says_when_to_look_again(backend, make_team):
    """As controller-runtime's RequeueAfter: later when healthy, soon while a restart is pending, never once the
    instance is destroyed."""
    from instances.reconcile import REQUEUE_LATER, REQUEUE_SOON, reconcile_instance

    team = make_team()
    instance = provision(team, actor="test")
    healthy = reconcile_instance(instance.pk, actor="test")
    assert (healthy.findings, healthy.requeue_after) == ([], REQUEUE_LATER)

    backend.observed = ObservedState.CRASHED
    restarts = []
    crashed = reconcile_instance(instance.pk, actor="test", restart=lambda team, actor: restarts.append(team))
    assert [finding.kind for finding in crashed.findings] == ["crashed"] and restarts == [team]
    assert crashed.requeue_after == REQUEUE_SOON
    pending = reconcile_instance(instance.pk, actor="test", restart=lambda team, actor: restarts.append(team))
    assert (pending.requeue_after, len(restarts)) == (REQUEUE_SOON, 1)  # the restart is waiting for the worker

    Instance.objects.filter(pk=instance.pk).update(state=Instance.State.DESTROYED,
                                                   desired_state=Instance.State.DESTROYED)
    assert reconcile_instance(instance.pk, actor="test").requeue_after is None
