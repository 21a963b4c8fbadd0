import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from teams.models import Team
from teams.tokens import InvalidToken, verify_team_token


def run(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_team_assigns_an_immutable_prefix(db):
    out, _ = run("create_team", "acme", "--name", "Acme Newsroom")
    team = Team.objects.get(slug="acme")
    assert team.name == "Acme Newsroom"
    assert team.storage_prefix == f"team-{team.pk}/"
    assert f"prefix team-{team.pk}/" in out


@pytest.mark.parametrize("slug, message", [
    ("Has Spaces", "lowercase letters"),
    ("trailing-", "lowercase letters"),
    ("a" * 64, "lowercase letters"),
    ("admin", "reserved"),
])
def test_create_team_rejects_bad_slugs(db, slug, message):
    with pytest.raises(CommandError, match=message):
        run("create_team", slug)
    assert not Team.objects.exists()


def test_create_team_rejects_a_taken_slug(db):
    run("create_team", "acme")
    with pytest.raises(CommandError, match="already exists"):
        run("create_team", "acme")


def test_team_token_prints_the_current_token(db):
    run("create_team", "acme")
    token, _ = run("team_token", "acme")
    assert verify_team_token(token.strip()).slug == "acme"


def test_rotate_token_revokes_the_old_one(db):
    run("create_team", "acme")
    old, _ = run("team_token", "acme")
    new, err = run("rotate_token", "acme")
    assert "generation 2" in err
    assert verify_team_token(new.strip()).slug == "acme"
    with pytest.raises(InvalidToken):
        verify_team_token(old.strip())


def test_unknown_team_is_a_clear_error(db):
    with pytest.raises(CommandError, match="no team with slug 'nope'"):
        run("team_token", "nope")


def test_check_isolation_takes_two_slugs_or_none(db):
    with pytest.raises(CommandError, match="two team slugs"):
        run("check_isolation", "only-one")


def test_create_team_takes_a_region_from_the_allowed_ones(db, settings):
    settings.REGIONS = ["ord", "ams"]
    run("create_team", "acme")
    run("create_team", "globex", "--region", "ams")
    assert dict(Team.objects.values_list("slug", "region")) == {"acme": "ord", "globex": "ams"}
    with pytest.raises(CommandError, match="region: 'mars' is not one of ord, ams"):
        run("create_team", "initech", "--region", "mars")


def test_check_backups_alerts_once_or_queues_a_repeating_task(db, settings):
    from datetime import timedelta

    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from instances.models import Instance

    settings.BACKUP_STALE_AFTER = 600
    run("create_team", "acme")
    Instance.objects.create(team=Team.objects.get(slug="acme"), backend="x", state="running")
    Instance.objects.update(backups_expected_since=timezone.now() - timedelta(hours=1))
    out, _ = run("check_backups")
    assert "ALERT acme" in out and "1 team(s) newly stale" in out
    assert "0 team(s) newly stale" in run("check_backups")[0]
    settings.BACKUP_CHECK_EVERY = 5
    with pytest.raises(CommandError, match="at least 30"):
        run("schedule_periodic")
    settings.BACKUP_CHECK_EVERY = 60
    run("schedule_periodic")
    assert "check_backups: already queued" in run("schedule_periodic")[0]  # no second chain
    task = DBTaskResult.objects.get(task_path="backups.tasks.check_backups")
    assert task.args_kwargs["args"] == [60]


def test_a_second_embedded_stack_on_the_same_state_is_refused(tmp_path):
    import os

    from django.core.management.base import CommandError

    from cloudctl.management.commands.dev import hold_state_lock

    first = hold_state_lock(tmp_path)
    with pytest.raises(CommandError, match=f"already running from {tmp_path} \\(pid {os.getpid()}\\)"):
        hold_state_lock(tmp_path)
    first.close()  # the first one stopped: the next can start
    hold_state_lock(tmp_path).close()


def test_rotate_token_restarts_the_instance_as_the_dashboard_does(db):
    """The command and the dashboard call the same service: revoke, record, and queue the restart that brings
    the new token into the instance (without it the instance would run on a revoked token until it stops)."""
    from instances.models import Instance, TeamAction
    from teams.models import TeamEvent

    run("create_team", "acme")
    team = Team.objects.get(slug="acme")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend", state=Instance.State.RUNNING)
    _, err = run("rotate_token", "acme")
    restart = TeamAction.objects.get(team=team)
    assert (restart.kind, restart.status) == (TeamAction.Kind.RESTART, TeamAction.Status.QUEUED)
    assert "restart queued" in err
    rotated = TeamEvent.objects.get(team=team, kind=TeamEvent.Kind.TOKEN_ROTATED)
    assert rotated.actor == "manage.py rotate_token"


def test_instance_status_of_a_team_without_one_creates_nothing(db):
    from instances.models import Instance

    run("create_team", "acme")
    Instance.objects.all().delete()  # as a team is before its provisioning task ran
    out, _ = run("instance", "acme", "status")
    assert "acme: no instance" in out
    assert not Instance.objects.exists()
