"""Abuse of the private API (issue 10): nobody can lock a team out of its credentials, refusals stay cheap and
bounded, and the client address comes from a proxy header only when a trusted proxy sent it."""

import logging

import pytest
from itsdangerous import URLSafeSerializer

from credentials.models import CredentialEvent
from teams.tokens import SALT, rotate_team_token, signal_value, team_token

URL = "/private/v1/credentials"


def forged_token(team_id: int, generation: int) -> str:
    """A token naming the team, signed with a key that is not ours."""
    return URLSafeSerializer("the attacker's key", salt=SALT).dumps({"team": team_id, "gen": generation})


def addresses(count: int) -> list[str]:
    return [f"10.77.{n // 200}.{n % 200 + 1}" for n in range(count)]


# --- 1. nothing unverified is charged to the team it names -------------------------------------------------

def test_forged_signal_urls_and_tokens_naming_a_team_never_lock_it_out(moto_aws, make_team, client,
                                                                       post_credentials):
    victim = make_team()
    statuses = set()
    for n, address in enumerate(addresses(100)):
        for attempt in range(5):
            forged_url = f"/private/v1/teams/{victim.pk}/signals/backup/forged.{n}.{attempt}"
            statuses.add(client.get(forged_url, REMOTE_ADDR=address).status_code)
            statuses.add(post_credentials(forged_token(victim.pk, victim.token_generation),
                                          REMOTE_ADDR=address).status_code)
    assert statuses == {401, 403}
    assert CredentialEvent.objects.filter(kind="refused").count() == 1000

    assert post_credentials(team_token(victim)).status_code == 200
    # The refusals name the team only as a claim: on its timeline, never charged to it.
    assert not CredentialEvent.objects.filter(team=victim, kind="refused").exists()
    assert CredentialEvent.objects.filter(claimed_team_id=victim.pk, team__isnull=True).count() == 1000


def test_an_sts_outage_leaves_the_team_its_credentials_once_sts_is_back(moto_aws, make_team, post_credentials,
                                                                        settings):
    team = make_team()
    role = settings.BACKUP_ROLE_ARN
    settings.BACKUP_ROLE_ARN = ""  # every exchange fails as in an outage
    assert {post_credentials(team_token(team)).status_code for _ in range(40)} == {503}
    settings.BACKUP_ROLE_ARN = role
    assert post_credentials(team_token(team)).status_code == 200


def test_the_old_machines_revoked_heartbeats_do_not_shut_out_the_new_token(moto_aws, make_team, client,
                                                                           post_credentials):
    team = make_team()
    old_heartbeat = f"/private/v1/teams/{team.pk}/signals/backup/{signal_value(team)}"
    new_token = rotate_team_token(team)
    statuses = {client.get(old_heartbeat, REMOTE_ADDR="10.0.0.5").status_code for _ in range(40)}
    assert statuses == {403, 429}  # refused, then throttled: the old machine's address sends only bad values
    assert post_credentials(new_token, REMOTE_ADDR="10.0.0.5").status_code == 200
    # A revoked value is genuinely the team's (our signature): its refusals are attributed to it.
    assert CredentialEvent.objects.filter(team=team, reason="revoked", signal="backup").exists()


def test_the_team_limit_counts_issuances_only(moto_aws, make_team, post_credentials, settings):
    settings.TEAM_RATE_LIMIT = "3/3600"
    team = make_team()
    token = team_token(team)
    rotate_team_token(team)
    for _ in range(10):
        assert post_credentials(token).status_code == 401  # revoked
    assert [post_credentials(team_token(team)).status_code for _ in range(4)] == [200, 200, 200, 429]


# --- 4. throttled requests cost no row ---------------------------------------------------------------------

def throttled_rows(reason: str, requests: int) -> list[CredentialEvent]:
    """The rows of `requests` throttled requests: one a minute (two if the test ran across a minute's end)."""
    rows = list(CredentialEvent.objects.filter(reason=reason))
    assert 1 <= len(rows) <= 2
    assert sum(row.request_count for row in rows) == requests
    return rows


def test_throttled_requests_cost_no_row_and_no_warning_each(db, post_credentials, settings, caplog):
    settings.BAD_TOKEN_RATE_LIMIT = "5/300"
    with caplog.at_level(logging.WARNING):
        statuses = [post_credentials(forged_token(7, n)).status_code for n in range(55)]
    assert statuses == [401] * 5 + [429] * 50
    rows = throttled_rows("address_rate_limited", 50)
    # A throttled row stands for many requests, each naming any team it liked: it claims none.
    assert {(row.team, row.claimed_team_id) for row in rows} == {(None, None)}
    assert CredentialEvent.objects.filter(reason="bad_signature", claimed_team_id=7).count() == 5
    assert CredentialEvent.objects.count() == 5 + len(rows)
    assert {row.client_ip for row in rows} == {"127.0.0.1"}
    # One line for each refusal with a row; none for the throttled requests that only added to one.
    logged = [record.name for record in caplog.records if record.levelno == logging.WARNING]
    assert logged.count("cloudctl.audit") == 5 + len(rows)
    assert logged.count("django.request") == 5  # "Unauthorized", not one "Too Many Requests" per request


def test_a_team_over_its_limit_costs_one_row_a_minute(moto_aws, make_team, post_credentials, settings):
    settings.TEAM_RATE_LIMIT = "2/3600"
    team = make_team()
    statuses = [post_credentials(team_token(team)).status_code for _ in range(30)]
    assert statuses == [200, 200] + [429] * 28
    assert {row.team for row in throttled_rows("team_rate_limited", 28)} == {team}


# --- 5. the client address header ---------------------------------------------------------------------------

def test_the_address_header_is_believed_only_from_a_trusted_proxy(moto_aws, make_team, post_credentials,
                                                                  settings):
    settings.CLIENT_IP_HEADER = "Fly-Client-IP"
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "fdaa::/16"]
    token = team_token(make_team())
    post_credentials(token, REMOTE_ADDR="10.1.2.3", HTTP_FLY_CLIENT_IP="192.0.2.7")
    post_credentials(token, REMOTE_ADDR="fdaa::1", HTTP_FLY_CLIENT_IP="192.0.2.8")
    post_credentials(token, REMOTE_ADDR="192.0.2.99", HTTP_FLY_CLIENT_IP="10.9.9.9")  # not a proxy: ignored
    assert list(CredentialEvent.objects.order_by("id").values_list("client_ip", flat=True)) == [
        "192.0.2.7", "192.0.2.8", "192.0.2.99"]


def test_a_spoofed_address_header_cannot_dodge_the_address_limit(db, post_credentials, settings):
    settings.CLIENT_IP_HEADER = "Fly-Client-IP"
    settings.BAD_TOKEN_RATE_LIMIT = "20/300"
    statuses = [post_credentials(f"bad-token-{n}", HTTP_FLY_CLIENT_IP=f"192.0.2.{n}").status_code
                for n in range(1, 31)]  # no trusted proxy configured: the header is ignored
    assert statuses == [401] * 20 + [429] * 10


@pytest.mark.parametrize("header", ["not-an-ip", "", "1.2.3.4, 5.6.7.8", "999.1.1.1"])
def test_an_invalid_header_value_falls_back_to_the_connecting_address(db, post_credentials, settings, header):
    settings.CLIENT_IP_HEADER = "Fly-Client-IP"
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]
    statuses = [post_credentials(f"bad-token-{n}", HTTP_FLY_CLIENT_IP=header).status_code for n in range(60)]
    assert statuses == [401] * 20 + [429] * 40
    assert set(CredentialEvent.objects.values_list("client_ip", flat=True)) == {"127.0.0.1"}


def test_an_unknown_address_is_never_exempt_from_the_limit(db, post_credentials, settings):
    settings.BAD_TOKEN_RATE_LIMIT = "5/300"
    statuses = [post_credentials(f"bad-token-{n}", REMOTE_ADDR="").status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3


def test_the_timeline_shows_claims_as_unverified(db, make_team, client):
    from console.selectors import timeline

    team = make_team()
    client.get(f"/private/v1/teams/{team.pk}/signals/backup/forged.value")
    [entry] = timeline(team)
    assert entry.kind == "backup_signal:refused"
    assert "unverified: it only claimed to be this team" in entry.message


# --- 4. retention and the metrics' totals ------------------------------------------------------------------

def totals_from_the_rows() -> dict:
    from django.db.models import Sum

    return {(kind, reason, signal): n for kind, reason, signal, n in CredentialEvent.objects.order_by()
            .values_list("kind", "reason", "signal").annotate(n=Sum("request_count"))}


def test_pruning_deletes_old_rows_and_never_takes_back_a_counter(db, make_team, settings):
    from datetime import timedelta

    from django.utils import timezone

    from credentials.retention import credential_event_totals, prune_credential_events

    settings.AUDIT_RETENTION_DAYS = 30
    team = make_team()
    long_ago, lately = timezone.now() - timedelta(days=31), timezone.now() - timedelta(days=29)
    for created_at in [long_ago] * 3 + [lately]:
        CredentialEvent.objects.create(kind="issued", team=team, created_at=created_at)
    CredentialEvent.objects.create(kind="refused", reason="address_rate_limited", request_count=40,
                                   created_at=long_ago)
    CredentialEvent.objects.create(kind="refused", reason="bad_signature")  # just now
    before = credential_event_totals()
    assert before == totals_from_the_rows() == {("issued", "", ""): 4, ("refused", "address_rate_limited", ""): 40,
                                                ("refused", "bad_signature", ""): 1}
    assert prune_credential_events() == 4
    assert list(CredentialEvent.objects.order_by("id").values_list("reason", "created_at"))[0] == ("", lately)
    assert list(CredentialEvent.objects.order_by("id").values_list("reason", flat=True)) == ["", "bad_signature"]
    assert credential_event_totals() == before


def test_the_totals_count_each_request_once_while_rows_settle(db, post_credentials, settings):
    from datetime import timedelta

    from django.utils import timezone

    from credentials.models import CredentialEventWatermark
    from credentials.retention import credential_event_totals

    settings.BAD_TOKEN_RATE_LIMIT = "2/300"
    post_credentials("bad-token-0")
    post_credentials("bad-token-1")
    post_credentials("bad-token-2")  # throttled: this minute's row, still counting
    assert credential_event_totals() == totals_from_the_rows()
    assert CredentialEventWatermark.objects.get().last_event_id == 0  # nothing settled yet
    for n in range(3, 8):
        post_credentials(f"bad-token-{n}")  # more throttled requests added to the same row
    in_three_minutes = timezone.now() + timedelta(minutes=3)
    totals = credential_event_totals(now=in_three_minutes)
    assert totals == totals_from_the_rows() == {("refused", "bad_signature", ""): 2,
                                                ("refused", "address_rate_limited", ""): 6}
    assert CredentialEventWatermark.objects.get().last_event_id == CredentialEvent.objects.latest("id").pk
    assert credential_event_totals(now=in_three_minutes) == totals  # folded in once, not again


def test_the_prune_command_and_its_periodic_task(db, settings):
    from datetime import timedelta

    from django.core.management import call_command
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from credentials.tasks import prune_audit_trail

    CredentialEvent.objects.create(kind="refused", reason="malformed",
                                   created_at=timezone.now() - timedelta(days=settings.AUDIT_RETENTION_DAYS + 1))
    settings.AUDIT_PRUNE_EVERY = 3600
    call_command("schedule_periodic")
    call_command("schedule_periodic")  # on every deploy: still one chain
    [queued] = DBTaskResult.objects.filter(task_path="credentials.tasks.prune_audit_trail")
    assert queued.args_kwargs["args"] == [3600]
    DBTaskResult.objects.filter(pk=queued.pk).update(status="RUNNING")  # the worker takes it
    assert prune_audit_trail.call(3600) == 1
    assert not CredentialEvent.objects.exists()
    next_runs = DBTaskResult.objects.filter(task_path="credentials.tasks.prune_audit_trail").exclude(pk=queued.pk)
    assert next_runs.get().run_after > timezone.now() + timedelta(seconds=3000)


@pytest.mark.parametrize("name, value, check_id", [
    ("AUDIT_RETENTION_DAYS", 0, "credentials.E004"),
    ("TEAM_RATE_LIMIT", "30/864000", "credentials.E004"),  # a 10-day window outlives a 1-day retention
    ("TRUSTED_PROXIES", ["10.0.0.0/8", "the proxy"], "credentials.E005"),
    ("CLIENT_IP_HEADER", "Fly-Client-IP", "credentials.W002"),  # with no trusted proxy
])
def test_bad_retention_and_proxy_settings_fail_the_checks(settings, name, value, check_id):
    from credentials.checks import credentials_settings

    settings.AUDIT_RETENTION_DAYS = 1 if name == "TEAM_RATE_LIMIT" else settings.AUDIT_RETENTION_DAYS
    assert check_id not in {message.id for message in credentials_settings(None)}
    setattr(settings, name, value)
    assert check_id in {message.id for message in credentials_settings(None)}


def test_a_backlog_is_folded_in_batches(db, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from credentials import retention
    from credentials.models import CredentialEventWatermark

    monkeypatch.setattr(retention, "ADVANCE_BATCH", 4)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    CredentialEvent.objects.bulk_create(CredentialEvent(kind="issued", created_at=an_hour_ago) for _ in range(10))
    assert retention.credential_event_totals() == {("issued", "", ""): 10}  # one batch folded, the rest live
    assert CredentialEventWatermark.objects.get().last_event_id == CredentialEvent.objects.order_by("id")[3].pk
    assert retention.advance_totals() == CredentialEvent.objects.latest("id").pk
    assert retention.credential_event_totals() == {("issued", "", ""): 10}
