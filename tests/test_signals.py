"""Instance signals on the private API (Litestream's heartbeat, datasette-scale-to-zero's shutdown) and the
stale-backup watch built on them."""

import json
import logging
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from backups.selectors import stale_backups_q
from backups.services import check_backup_freshness
from cloudctl.logs import redact_signal_urls
from credentials.models import CredentialEvent
from credentials.services import signal_urls
from instances.backends import BackendError, ObservedState, Step
from instances.machines import get_backend
from instances.lifecycle import run_action
from instances.models import Instance, TeamAction
from instances.provisioning import provision
from instances.supervision import supervise
from teams.models import Team, TeamEvent
from teams.tokens import rotate_team_token, shutdown_value, signal_value, team_token

from .test_provisioning import ScriptedBackend
from .test_secrets_never_stored import database_text


BOOT = "boot-id-of-this-start-0001"


def urls_of(team, boot: str = BOOT) -> dict:
    return signal_urls(team, lambda path: f"http://testserver{path}", boot=boot)


def path_of(url: str) -> str:
    return urlsplit(url).path


def running(team, *, since_minutes: float = 60, last_backup_minutes: float | None = None) -> Instance:
    now = timezone.now()
    instance = Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, boot_id=BOOT)
    Instance.objects.filter(pk=instance.pk).update(
        backups_expected_since=now - timedelta(minutes=since_minutes),
        last_backup_at=None if last_backup_minutes is None else now - timedelta(minutes=last_backup_minutes))
    instance.refresh_from_db()
    return instance


def test_the_exchange_hands_the_instance_its_signal_urls(post_credentials, make_team, moto_aws, settings):
    settings.INSTANCE_HEARTBEAT_INTERVAL = "2m"
    team = make_team()
    Instance.objects.create(team=team, backend="x", state=Instance.State.PROVISIONING)
    body = post_credentials(team_token(team), HTTP_X_CLOUDCTL_BOOT=BOOT).json()
    signals = body["Signals"]
    assert signals["heartbeat_interval"] == "2m"
    assert path_of(signals["heartbeat_url"]) == f"/private/v1/teams/{team.pk}/signals/backup/{signal_value(team)}"
    # Its own value, bound to this boot: the heartbeat URL (which Litestream logs) is no shutdown URL.
    assert path_of(signals["shutdown_url"]) == (
        f"/private/v1/teams/{team.pk}/signals/shutdown/{shutdown_value(team, BOOT)}")
    assert signals["heartbeat_url"].startswith("http://testserver/")  # the address the instance reached
    assert Instance.objects.get(team=team).boot_id == BOOT


def test_an_exchange_without_a_boot_id_gets_no_shutdown_url(post_credentials, make_team, moto_aws):
    team = make_team()
    Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, boot_id=BOOT)
    signals = post_credentials(team_token(team)).json()["Signals"]  # e.g. datasette-files-s3
    assert "heartbeat_url" in signals and "shutdown_url" not in signals
    assert Instance.objects.get(team=team).boot_id == BOOT  # the running boot's shutdown URL still counts


@pytest.mark.parametrize("boot", ["short", "x" * 65, "has spaces in it!!", "caf\u00e9" * 5])
def test_a_malformed_boot_id_is_refused(post_credentials, make_team, moto_aws, boot):
    team = make_team()
    response = post_credentials(team_token(team), HTTP_X_CLOUDCTL_BOOT=boot)
    assert response.status_code == 400
    assert "boot id" in response.json()["error"]
    assert CredentialEvent.objects.get().reason == "bad_request"


def test_a_shutdown_url_of_an_earlier_boot_is_refused_and_changes_nothing(client, post_credentials, make_team,
                                                                         moto_aws):
    team = make_team()
    instance = running(team)
    earlier = path_of(urls_of(team, boot=BOOT)["shutdown_url"])
    # The instance restarts: its new boot exchanges (the renewal within that boot sends the same id again).
    for _ in range(2):
        current = post_credentials(team_token(team), HTTP_X_CLOUDCTL_BOOT="boot-id-of-the-next-start").json()
    response = client.post(earlier, data="{}", content_type="application/json")
    assert (response.status_code, response.json()) == (403, {"error": "invalid signal URL"})
    refusal = CredentialEvent.objects.get(kind="refused")
    assert (refusal.reason, refusal.signal, refusal.team_id) == ("stale_boot", "shutdown", team.pk)
    instance.refresh_from_db()
    assert instance.scaled_to_zero_at is None and instance.backups_expected_since is not None

    assert client.post(path_of(current["Signals"]["shutdown_url"]), data="{}",
                       content_type="application/json").status_code == 200
    instance.refresh_from_db()
    assert instance.scaled_to_zero_at is not None


def test_a_heartbeat_url_is_no_shutdown_url_nor_the_reverse(client, make_team):
    team = make_team()
    instance = running(team)
    urls = urls_of(team)
    heartbeat_value, shutdown = signal_value(team), shutdown_value(team, BOOT)
    as_shutdown = client.post(f"/private/v1/teams/{team.pk}/signals/shutdown/{heartbeat_value}", data="{}",
                              content_type="application/json")
    as_heartbeat = client.get(f"/private/v1/teams/{team.pk}/signals/backup/{shutdown}")
    assert as_shutdown.status_code == as_heartbeat.status_code == 403
    assert set(CredentialEvent.objects.values_list("reason", flat=True)) == {"bad_signature"}
    instance.refresh_from_db()
    assert instance.scaled_to_zero_at is None and instance.last_backup_at is None
    assert urls["shutdown_url"].endswith(shutdown)


def test_a_new_boot_resumes_the_backup_watch_after_a_scale_to_zero(client, post_credentials, make_team, moto_aws):
    """On Fly a request wakes a scaled-to-zero Machine without telling cloudctl: its first exchange does."""
    team = make_team()
    instance = running(team)
    client.post(path_of(urls_of(team)["shutdown_url"]), data="{}", content_type="application/json")
    instance.refresh_from_db()
    assert instance.backups_expected_since is None
    post_credentials(team_token(team), HTTP_X_CLOUDCTL_BOOT="boot-id-of-the-next-start")
    instance.refresh_from_db()
    assert instance.backups_expected_since is not None
    assert TeamEvent.objects.filter(team=team, kind="backup_watch_resumed").exists()


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
        flagged = check_backup_freshness(actor="test")
    assert sorted(team.slug for team in flagged) == sorted([stale.slug, never.slug])
    assert any("backup_stale" in record.getMessage() for record in caplog.records)
    assert set(Team.objects.filter(stale_backups_q(prefix="instance__"))) == {stale, never}
    assert check_backup_freshness(actor="test") == []  # one alert per episode
    assert TeamEvent.objects.filter(kind="backup_stale").count() == 2

    client.get(path_of(urls_of(stale)["heartbeat_url"]))
    assert set(Team.objects.filter(stale_backups_q(prefix="instance__"))) == {never}
    assert TeamEvent.objects.filter(team=stale, kind="backup_resumed").exists()
    # Eleven minutes on with no heartbeat anywhere: a new episode for `stale`, first alerts for the rest;
    # `never` is still in its first episode (no second alert).
    later = check_backup_freshness(timezone.now() + timedelta(minutes=11), actor="test")
    assert set(later) == {stale, fresh, new}


def test_the_threshold_comes_from_the_setting(make_team, settings):
    team = make_team()
    running(team, since_minutes=60, last_backup_minutes=20)
    settings.BACKUP_STALE_AFTER = 3600
    assert check_backup_freshness(actor="test") == []
    settings.BACKUP_STALE_AFTER = 600
    assert check_backup_freshness(actor="test") == [team]


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

    from backups.tasks import check_backups

    settings.BACKUP_STALE_AFTER = 600
    team = make_team()
    running(team, since_minutes=60)
    assert check_backups.call(120) == 1
    assert TeamEvent.objects.filter(team=team, kind="backup_stale").exists()
    [next_run] = DBTaskResult.objects.filter(task_path="backups.tasks.check_backups")
    assert next_run.args_kwargs["args"] == [120]
    assert next_run.run_after > timezone.now() + timedelta(seconds=100)


# --- signal values never stored -----------------------------------------------------------------------------

class LeakyBackend(ScriptedBackend):
    """An instance whose log tail carries its signal URLs, as Litestream's log does when a heartbeat fails."""

    log_lines = ""

    def provisioning_steps(self):
        def healthy(instance):
            raise BackendError(f"the instance exited during start; last log lines:\n{self.log_tail(instance)}")
        return [*super().provisioning_steps()[:2], Step("healthy", healthy)]

    def log_tail(self, instance, lines=15):
        return self.log_lines


def test_instance_output_is_stored_with_its_signal_values_redacted(staff_client, make_team, settings):
    settings.MACHINE_BACKEND = "tests.test_signals.LeakyBackend"
    get_backend.cache_clear()
    backend = get_backend(settings.MACHINE_BACKEND)
    team = make_team("acme")
    urls = urls_of(team)
    values = [urlsplit(url).path.rsplit("/", 1)[1] for url in (urls["heartbeat_url"], urls["shutdown_url"])]
    backend.log_lines = (f'level=ERROR msg="heartbeat failed" url={urls["heartbeat_url"]} error="dial tcp: refused"\n'
                         f"shutdown_url={urls['shutdown_url']}")
    try:
        with pytest.raises(BackendError):
            provision(team, actor="test")  # last_error and the provisioning_failed event
        action = TeamAction.objects.create(team=team, kind=TeamAction.Kind.START)
        assert run_action(action.pk).status == TeamAction.Status.FAILED  # the action's error
        Instance.objects.filter(team=team).update(state=Instance.State.RUNNING, desired_state=Instance.State.RUNNING)
        backend.observed = ObservedState.CRASHED
        supervise(settings.MACHINE_BACKEND, actor="test")  # the crash event with the log tail
    finally:
        get_backend.cache_clear()

    assert "/signals/backup/<redacted>" in Instance.objects.get(team=team).last_error
    assert TeamEvent.objects.filter(team=team, kind="crashed", message__contains="heartbeat failed").exists()
    stored = database_text()
    pages = [staff_client.get(url).content.decode()
             for url in ("/dashboard/", "/dashboard/teams/acme/", "/dashboard/teams/acme/status.json")]
    for value in values:
        assert value not in stored
        for page in pages:
            assert value not in page


def test_redaction_covers_signal_urls_and_bare_signed_values(make_team):
    team = make_team()
    token, value = team_token(team), signal_value(team)
    text = f"GET /private/v1/teams/{team.pk}/signals/shutdown/{value}?x=1 token={token} ok"
    redacted = redact_signal_urls(text)
    assert redacted == f"GET /private/v1/teams/{team.pk}/signals/shutdown/<redacted>?x=1 token=<redacted> ok"
    assert redact_signal_urls("nothing to hide: team-1, eyJ alone, a.b") == "nothing to hide: team-1, eyJ alone, a.b"


@pytest.mark.django_db(transaction=True)
def test_the_migration_redacts_rows_stored_before(make_team):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    team = make_team()
    leak = f"url=http://x/private/v1/teams/{team.pk}/signals/backup/{signal_value(team)} failed"
    executor = MigrationExecutor(connection)
    executor.migrate([("teams", "0007_team_permissions_groups")])
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO teams_teamevent (team_id, created_at, kind, message, is_error) "
                           "VALUES (%s, %s, 'crashed', %s, %s)", [team.pk, timezone.now(), leak, True])
        executor = MigrationExecutor(connection)
        executor.migrate([("teams", "0008_redact_instance_output")])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    assert TeamEvent.objects.get(kind="crashed").message == (
        f"url=http://x/private/v1/teams/{team.pk}/signals/backup/<redacted> failed")


# --- a shutdown signal does not outweigh what the backend sees ------------------------------------------------

@pytest.mark.parametrize("observed, watched", [(ObservedState.RUNNING, True), (ObservedState.STOPPED, False)])
def test_a_machine_still_running_after_its_shutdown_signal_is_watched_again(client, make_team, settings, observed,
                                                                           watched):
    settings.BACKUP_STALE_AFTER = 600
    get_backend.cache_clear()
    backend = get_backend("tests.test_provisioning.ScriptedBackend")
    backend.observed = observed
    team = make_team()
    instance = running(team, last_backup_minutes=1)
    Instance.objects.filter(pk=instance.pk).update(backend="tests.test_provisioning.ScriptedBackend")
    try:
        assert client.post(path_of(urls_of(team)["shutdown_url"]), data="{}",
                           content_type="application/json").status_code == 200
        now = timezone.now()
        assert check_backup_freshness(now + timedelta(minutes=1), actor="test") == []  # still within its time to exit
        assert not TeamEvent.objects.filter(team=team, kind="backup_watch_resumed").exists()
        assert check_backup_freshness(now + timedelta(minutes=3), actor="test") == []
        assert TeamEvent.objects.filter(team=team, kind="backup_watch_resumed").exists() == watched
        flagged = check_backup_freshness(now + timedelta(minutes=3 + 11), actor="test")
    finally:
        get_backend.cache_clear()
    assert flagged == ([team] if watched else [])
