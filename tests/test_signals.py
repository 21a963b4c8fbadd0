"""Instance signals on the private API (Litestream's heartbeat, datasette-scale-to-zero's shutdown) and the
stale-backup watch built on them."""

import json
import logging
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from credentials.models import CredentialEvent
from credentials.services import signal_urls
from credentials.tokens import rotate_team_token, signal_value, team_token
from teams.instance_signals import check_backup_freshness, stale_backups_q
from teams.models import Instance, Team, TeamEvent


def urls_of(team) -> dict:
    return signal_urls(team, lambda path: f"http://testserver{path}")


def path_of(url: str) -> str:
    return urlsplit(url).path


def running(team, *, since_minutes: float = 60, last_backup_minutes: float | None = None) -> Instance:
    now = timezone.now()
    instance = Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING)
    Instance.objects.filter(pk=instance.pk).update(
        backups_expected_since=now - timedelta(minutes=since_minutes),
        last_backup_at=None if last_backup_minutes is None else now - timedelta(minutes=last_backup_minutes))
    instance.refresh_from_db()
    return instance


def test_the_exchange_hands_the_instance_its_signal_urls(post_credentials, make_team, moto_aws, settings):
    settings.INSTANCE_HEARTBEAT_INTERVAL = "2m"
    team = make_team()
    body = post_credentials(team_token(team)).json()
    signals = body["Signals"]
    assert signals["heartbeat_interval"] == "2m"
    assert path_of(signals["heartbeat_url"]) == f"/private/v1/teams/{team.pk}/signals/backup/{signal_value(team)}"
    assert path_of(signals["shutdown_url"]) == f"/private/v1/teams/{team.pk}/signals/shutdown/{signal_value(team)}"
    assert signals["heartbeat_url"].startswith("http://testserver/")  # the address the instance reached


def test_a_heartbeat_records_the_last_backup_time(client, make_team):
    team = make_team()
    instance = running(team)
    before = timezone.now()
    response = client.get(path_of(urls_of(team)["heartbeat_url"]))
    assert response.status_code == 200
    assert response.json() == {"recorded": "backup", "team": team.pk}
    instance.refresh_from_db()
    assert instance.last_backup_at >= before


@pytest.mark.parametrize("forge", ["flipped", "token", "other_team", "rotated"])
def test_forged_or_foreign_signal_urls_are_refused_and_recorded(client, make_team, forge):
    team, other = make_team(), make_team()
    instance = running(team)
    value = signal_value(team)
    expected_reason = {"flipped": "bad_signature", "token": "bad_signature", "other_team": "wrong_team",
                       "rotated": "revoked"}[forge]
    if forge == "flipped":
        value = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    elif forge == "token":  # a team token is no signal value (separate salt)
        value = team_token(team)
    elif forge == "other_team":  # the other team's valid value on this team's URL
        value = signal_value(other)
    else:
        old = value
        rotate_team_token(team)
        value = old
    response = client.get(f"/private/v1/teams/{team.pk}/signals/backup/{value}")
    assert response.status_code == 403
    assert response.json() == {"error": "invalid signal URL"}
    instance.refresh_from_db()
    assert instance.last_backup_at is None
    event = CredentialEvent.objects.get()
    # Recorded on the team the URL names: as the team's own (revoked) value when we signed it for the team,
    # else only as a claim, which is never charged to the team (issue 10).
    verified = forge == "rotated"
    assert (event.kind, event.reason, event.signal) == ("refused", expected_reason, "backup")
    assert (event.team_id, event.claimed_team_id) == ((team.pk, None) if verified else (None, team.pk))
    assert event.token_fingerprint and value not in event.token_fingerprint


def test_bad_signal_requests_get_json_4xx(client, make_team):
    team = make_team()
    running(team)
    shutdown = path_of(urls_of(team)["shutdown_url"])
    assert client.get(shutdown).status_code == 405
    assert client.get(shutdown).json() == {"error": "use POST"}
    bad_json = client.post(shutdown, data="{nope", content_type="application/json")
    assert (bad_json.status_code, bad_json.json()) == (400, {"error": "the body must be a JSON object"})
    assert client.post(shutdown, data="[1]", content_type="application/json").status_code == 400
    unknown = client.get(f"/private/v1/teams/{team.pk}/signals/reboot/{signal_value(team)}")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "not found"})
    missing = client.get(f"/private/v1/teams/999999/signals/backup/{signal_value(team)}")
    assert missing.status_code == 403
    assert CredentialEvent.objects.filter(kind="refused", signal="shutdown").count() == 4


@pytest.mark.parametrize("uptime, reason", [(40000, "max age reached (39600s)"), (120, "idle for 900s")])
def test_a_shutdown_records_when_and_why(client, make_team, uptime, reason):
    team = make_team()
    instance = running(team)
    report = {"started_at": timezone.now().timestamp() - uptime, "max_age": 39600, "idle_timeout": 900}
    response = client.post(path_of(urls_of(team)["shutdown_url"]), data=json.dumps(report),
                           content_type="application/json")
    assert response.status_code == 200
    instance.refresh_from_db()
    assert instance.scaled_to_zero_at is not None
    assert instance.scaled_to_zero_reason.startswith(reason)
    assert instance.backups_expected_since is None  # no heartbeats owed while scaled to zero
    assert TeamEvent.objects.filter(team=team, kind="scaled_to_zero", message__contains=reason).exists()


def test_stale_backups_are_alerted_once_and_clear_when_heartbeats_resume(client, make_team, settings, caplog):
    settings.BACKUP_STALE_AFTER = 600
    stale, fresh, new, never = make_team(), make_team(), make_team(), make_team()
    running(stale, since_minutes=60, last_backup_minutes=11)
    running(fresh, since_minutes=60, last_backup_minutes=9)
    running(new, since_minutes=5)  # just started: not yet owing a heartbeat
    running(never, since_minutes=11)  # started 11 minutes ago, never sent one
    stopped = make_team()
    Instance.objects.create(team=stopped, backend="x", state=Instance.State.STOPPED)

    with caplog.at_level(logging.ERROR):
        flagged = check_backup_freshness()
    assert sorted(team.slug for team in flagged) == sorted([stale.slug, never.slug])
    assert any("backup_stale" in record.getMessage() for record in caplog.records)
    assert set(Team.objects.filter(stale_backups_q(prefix="instance__"))) == {stale, never}
    assert check_backup_freshness() == []  # one alert per episode
    assert TeamEvent.objects.filter(kind="backup_stale").count() == 2

    client.get(path_of(urls_of(stale)["heartbeat_url"]))
    assert set(Team.objects.filter(stale_backups_q(prefix="instance__"))) == {never}
    assert TeamEvent.objects.filter(team=stale, kind="backup_resumed").exists()
    # Eleven minutes on with no heartbeat anywhere: a new episode for `stale`, first alerts for the rest;
    # `never` is still in its first episode (no second alert).
    later = check_backup_freshness(timezone.now() + timedelta(minutes=11))
    assert set(later) == {stale, fresh, new}


def test_the_threshold_comes_from_the_setting(make_team, settings):
    team = make_team()
    running(team, since_minutes=60, last_backup_minutes=20)
    settings.BACKUP_STALE_AFTER = 3600
    assert check_backup_freshness() == []
    settings.BACKUP_STALE_AFTER = 600
    assert check_backup_freshness() == [team]


def test_an_instance_that_starts_running_owes_heartbeats_from_then_on(make_team):
    team = make_team()
    instance = Instance.objects.create(team=team, backend="x", state=Instance.State.PROVISIONING)
    assert instance.backups_expected_since is None
    instance.state = Instance.State.RUNNING
    instance.save(update_fields=["state", "updated_at"])
    instance.refresh_from_db()
    assert instance.backups_expected_since is not None
    instance.state = Instance.State.STOPPED
    instance.save(update_fields=["state", "updated_at"])
    instance.refresh_from_db()
    assert instance.backups_expected_since is None


def test_an_address_sending_bad_signal_urls_is_throttled(client, make_team, settings):
    settings.BAD_TOKEN_RATE_LIMIT = "3/300"
    team = make_team()
    running(team)
    statuses = [client.get(f"/private/v1/teams/{team.pk}/signals/backup/forged.value{n}").status_code
                for n in range(5)]
    assert statuses == [403, 403, 403, 429, 429]
    throttled = client.get(f"/private/v1/teams/{team.pk}/signals/backup/forged.value")
    assert throttled["Retry-After"] == "300"
    # The team's own URL still works from another address (a forger cannot block its heartbeats).
    ok = client.get(path_of(urls_of(team)["heartbeat_url"]), REMOTE_ADDR="10.0.0.7")
    assert ok.status_code == 200


def test_the_periodic_check_task_alerts_and_queues_its_next_run(make_team, settings):
    from django_tasks_db.models import DBTaskResult

    from teams.tasks import check_backups

    settings.BACKUP_STALE_AFTER = 600
    team = make_team()
    running(team, since_minutes=60)
    assert check_backups.call(120) == 1
    assert TeamEvent.objects.filter(team=team, kind="backup_stale").exists()
    [next_run] = DBTaskResult.objects.filter(task_path="teams.tasks.check_backups")
    assert next_run.args_kwargs["args"] == [120]
    assert next_run.run_after > timezone.now() + timedelta(seconds=100)
