"""One periodic schedule (cloudctl/schedule.py): `manage.py schedule_periodic` queues every periodic task that is
on once, whoever runs it (fly.toml's release command, `manage.py dev`) and however often."""

import io
import os
import shlex
import tomllib
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django_tasks_db.models import DBTaskResult

from cloudctl.schedule import SCHEDULE

pytestmark = pytest.mark.django_db

FLY_TOML = Path(django_settings.BASE_DIR) / "fly.toml"
EVERY = {"RECONCILE_EVERY": 300, "BACKUP_CHECK_EVERY": 60, "AUDIT_PRUNE_EVERY": 3600, "CERTIFICATE_CHECK_EVERY": 3600,
         "DRILL_EVERY": 600, "RESTORE_TEND_EVERY": 300}


def schedule_periodic() -> str:
    out = io.StringIO()
    call_command("schedule_periodic", stdout=out)
    return out.getvalue()


def waiting() -> list[tuple[str, list]]:
    return sorted(DBTaskResult.objects.filter(status="READY").values_list("task_path", "args_kwargs__args"))


@pytest.fixture
def intervals(settings):
    for name, every in EVERY.items():
        setattr(settings, name, every)
    return settings


def test_every_periodic_task_is_queued_once_and_again_nothing_new(intervals):
    out = schedule_periodic()
    expected = sorted((periodic.task.module_path, [EVERY[periodic.setting]]) for periodic in SCHEDULE)
    assert waiting() == expected
    assert {periodic.setting for periodic in SCHEDULE} == set(EVERY)
    for periodic in SCHEDULE:
        assert f"{periodic.task.name}: queued, every {EVERY[periodic.setting]} s" in out
    again = schedule_periodic()
    assert waiting() == expected  # a release on every deploy: still one chain each
    assert again.count("already queued") == len(SCHEDULE) and ": queued" not in again


def test_a_task_set_to_0_is_not_queued(intervals):
    intervals.RECONCILE_EVERY = 0  # the default: reconcile works on Fly only
    out = schedule_periodic()
    assert "reconcile_fleet: off (CLOUDCTL_RECONCILE_EVERY=0)" in out
    assert "instances.tasks.reconcile_fleet" not in {path for path, _ in waiting()}
    assert len(waiting()) == len(SCHEDULE) - 1


def test_a_changed_interval_retunes_the_waiting_run_instead_of_adding_a_chain(intervals):
    from backups.tasks import check_backups

    schedule_periodic()
    intervals.BACKUP_CHECK_EVERY = 120
    assert "check_backups: already queued: retuned to every 120 s" in schedule_periodic()
    assert ("backups.tasks.check_backups", [120]) in waiting()
    intervals.BACKUP_CHECK_EVERY = 0  # off: the waiting run is the chain's last
    schedule_periodic()
    [last] = DBTaskResult.objects.filter(task_path="backups.tasks.check_backups", status="READY")
    assert last.args_kwargs["args"] == [0]
    DBTaskResult.objects.filter(pk=last.pk).update(status="RUNNING")  # the worker takes it
    check_backups.call(*last.args_kwargs["args"])
    assert not DBTaskResult.objects.filter(task_path="backups.tasks.check_backups", status="READY").exists()


def test_an_interval_below_a_tasks_minimum_is_refused(intervals):
    from django.core.checks import run_checks

    intervals.BACKUP_CHECK_EVERY = 5
    with pytest.raises(CommandError, match="CLOUDCTL_BACKUP_CHECK_EVERY is 5: 0 \\(off\\) or at least 30"):
        schedule_periodic()
    assert not DBTaskResult.objects.exists()
    assert "cloudctl.E004" in {message.id for message in run_checks()}


def test_flys_release_command_migrates_then_queues_the_schedule_and_turns_reconcile_on(settings):
    fly = tomllib.loads(FLY_TOML.read_text())
    shell, flag, script = shlex.split(fly["deploy"]["release_command"])
    assert (shell, flag) == ("sh", "-c")
    commands = [shlex.split(command) for command in script.split("&&")]
    assert commands == [["python", "manage.py", "migrate", "--noinput"], ["python", "manage.py", "schedule_periodic"]]
    # The schedule decides from the settings fly.toml gives: reconcile is on there.
    for periodic in SCHEDULE:
        value = fly["env"].get(f"CLOUDCTL_{periodic.setting}")
        if value is not None:
            setattr(settings, periodic.setting, int(value))
    assert settings.RECONCILE_EVERY >= 60
    schedule_periodic()
    assert {path for path, _ in waiting()} == {periodic.task.module_path for periodic in SCHEDULE}


def test_the_embedded_stack_queues_the_schedule(settings, tmp_path, monkeypatch):
    """`manage.py dev` runs the same command before it starts its worker (stopped here where it starts serving)."""
    from cloudctl.local_s3 import LocalS3Config, free_port_set
    from cloudctl.management.commands import dev

    class NotServing(Exception):
        pass

    class FakeLocalS3:
        def __init__(self, home, *, ports=None):
            self.config = LocalS3Config(admin_access_key="local", admin_secret_key="local-secret",
                                        sts_signing_key="local-signing", bucket="backups",
                                        ports=ports or free_port_set())

        def start(self):
            return self.config

        def stop(self):
            pass

    def not_serving(command, port):
        raise NotServing

    settings.STATE_DIR = tmp_path / "state"
    settings.EMBEDDED_ENV_FILE = settings.STATE_DIR / "embedded.env"
    settings.STATIC_ROOT = tmp_path / "static"
    settings.AUDIT_PRUNE_EVERY, settings.BACKUP_CHECK_EVERY, settings.RECONCILE_EVERY = 3600, 60, 0
    for name in [*FakeLocalS3(None).config.client_environ(), "CLOUDCTL_PRIVATE_API_URL"]:
        monkeypatch.delenv(name, raising=False)  # restored after the test: dev exports its own
    monkeypatch.setenv("CLOUDCTL_PUBLIC_URL", "")  # so that monkeypatch removes what dev exports, afterwards
    monkeypatch.delenv("CLOUDCTL_PUBLIC_URL")
    monkeypatch.setattr(dev, "LocalS3Server", FakeLocalS3)
    monkeypatch.setattr(dev.signal, "signal", lambda *args: None)
    monkeypatch.setattr(dev.Command, "_serve", not_serving)
    command = dev.Command(stdout=io.StringIO())
    with pytest.raises(NotServing):
        command.handle(port=8123, router_port=8081)
    command._lock.close()
    assert {path for path, _ in waiting()} == {"backups.tasks.check_backups", "credentials.tasks.prune_audit_trail",
                                               "sso.tasks.prune_single_sign_on", "backups.tasks.drill_restores",
                                               "backups.tasks.tend_restores"}
    assert "prune_audit_trail: queued, every 3600 s" in command.stdout._out.getvalue()
    # Invitation links and the instances' sign-in redirects come back to the port the control plane serves.
    assert os.environ["CLOUDCTL_PUBLIC_URL"] == settings.PUBLIC_URL == "http://localhost:8123"


def test_a_run_finishing_after_a_release_queued_the_next_does_not_double_the_chain(intervals):
    """A deploy while a run is on the worker: the release finds no run waiting and queues one; the running one,
    when it finishes, must not queue a second."""
    from credentials.tasks import prune_audit_trail

    schedule_periodic()
    [running] = DBTaskResult.objects.filter(task_path="credentials.tasks.prune_audit_trail")
    DBTaskResult.objects.filter(pk=running.pk).update(status="RUNNING")  # the worker took it
    assert "prune_audit_trail: queued, every 3600 s" in schedule_periodic()  # the release, meanwhile
    prune_audit_trail.call(*running.args_kwargs["args"])  # the run finishes
    assert [path for path, _ in waiting()].count("credentials.tasks.prune_audit_trail") == 1
