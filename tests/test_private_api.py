import json
from datetime import datetime, timedelta, timezone

import pytest
from botocore.stub import ANY, Stubber

from credentials.broker import sts_client
from credentials.models import CredentialEvent
from teams.models import Team
from teams.tokens import rotate_team_token, team_token

URL = "/private/v1/credentials"
CREDENTIAL_PROCESS_KEYS = {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration", "S3Folder",
                           "Signals"}


def parse_expiration(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_bearer_token_gets_credential_process_json(s3_env, make_team, post_credentials):
    team = make_team()
    response = post_credentials(team_token(team))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == CREDENTIAL_PROCESS_KEYS
    assert body["Version"] == 1
    assert body["S3Folder"] == f"s3://{s3_env.bucket}/team-{team.pk}/"
    lifetime = parse_expiration(body["Expiration"]) - datetime.now(timezone.utc)
    assert timedelta(hours=11, minutes=55) < lifetime <= timedelta(hours=12)


def test_form_field_secret_is_the_datasette_files_s3_contract(s3_env, make_team, client):
    team = make_team()
    response = client.post(URL, {"secret": team_token(team)})
    assert response.status_code == 200
    assert set(response.json()) == CREDENTIAL_PROCESS_KEYS


def test_datasette_litestream_format(s3_env, make_team, post_credentials):
    team = make_team()
    response = post_credentials(team_token(team), query="?format=datasette-litestream")
    assert response.status_code == 200
    assert set(response.json()) == {"access-key-id", "secret-access-key", "session-token", "expiration", "Signals"}


def test_unknown_format_is_a_400(s3_env, make_team, post_credentials):
    response = post_credentials(team_token(make_team()), query="?format=xml")
    assert response.status_code == 400
    assert "unknown format" in response.json()["error"]


def test_every_bad_token_gets_the_same_401(s3_env, make_team, post_credentials):
    team = make_team()
    revoked = team_token(team)
    rotate_team_token(team)
    deleted_team = make_team()
    deleted = team_token(deleted_team)
    deleted_team.delete()
    answers = {post_credentials(token).content for token in (revoked, deleted, revoked[:-3], "garbage!!", "x" * 600)}
    assert answers == {b'{"error": "invalid token"}'}
    reasons = set(CredentialEvent.objects.values_list("reason", flat=True))
    assert {"revoked", "unknown_team", "bad_signature", "malformed"} <= reasons


def test_missing_token_is_a_401(db, post_credentials):
    response = post_credentials(None)
    assert response.status_code == 401
    assert response.json() == {"error": "missing token"}


def test_disabled_team_is_a_403(s3_env, make_team, post_credentials):
    team = make_team(status=Team.Status.DISABLED)
    response = post_credentials(team_token(team))
    assert response.status_code == 403
    assert response.json() == {"error": "team disabled"}


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_a_405_json(db, client, method):
    response = getattr(client, method)(URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json() == {"error": "use POST"}


def test_oversized_body_is_a_413(db, client, settings):
    response = client.post(URL, data="x" * (settings.PRIVATE_API_MAX_BODY + 1), content_type="text/plain")
    assert response.status_code == 413
    assert "error" in response.json()


def test_no_session_or_csrf_cookie(s3_env, make_team, client):
    response = client.post(URL, {"secret": team_token(make_team())})
    assert response.status_code == 200
    assert not response.cookies


def test_unknown_private_path_is_json_404(db, client):
    response = client.get("/private/v1/nothing")
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_disallowed_host_is_json_400(db, client):
    response = client.post(URL, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response.json() == {"error": "bad request"}


def test_team_asking_too_often_gets_429(s3_env, make_team, post_credentials, settings):
    settings.TEAM_RATE_LIMIT = "3/3600"
    busy, quiet = make_team(), make_team()
    statuses = [post_credentials(team_token(busy)).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = post_credentials(team_token(busy))
    assert refused["Retry-After"] == "3600"
    assert post_credentials(team_token(quiet)).status_code == 200


def test_address_sending_bad_tokens_gets_429_but_good_tokens_still_pass(
    s3_env, make_team, post_credentials, settings
):
    settings.BAD_TOKEN_RATE_LIMIT = "5/300"
    statuses = [post_credentials(f"bad-token-{i}").status_code for i in range(7)]
    assert statuses == [401] * 5 + [429] * 2
    assert post_credentials(team_token(make_team())).status_code == 200


def test_fleet_restart_from_one_address_is_not_throttled(s3_env, make_team, post_credentials, settings):
    settings.BAD_TOKEN_RATE_LIMIT = "5/300"
    teams = [make_team() for _ in range(30)]
    statuses = {post_credentials(team_token(team), REMOTE_ADDR="10.0.0.1").status_code for team in teams}
    assert statuses == {200}


def test_client_address_comes_from_the_configured_proxy_header(s3_env, make_team, post_credentials, settings):
    settings.CLIENT_IP_HEADER = "Fly-Client-IP"
    settings.TRUSTED_PROXIES = ["127.0.0.0/8"]  # the test client connects from 127.0.0.1
    post_credentials(team_token(make_team()), HTTP_FLY_CLIENT_IP="fdaa::3")
    # Not an address: the connecting one (issue 10: never none at all, which the address limit would not count).
    post_credentials(team_token(make_team()), HTTP_FLY_CLIENT_IP="not an address")
    assert list(CredentialEvent.objects.order_by("created_at").values_list("client_ip", flat=True)) == [
        "fdaa::3", "127.0.0.1"]


def test_sts_failure_is_a_503_without_aws_details(s3_env, make_team, post_credentials, settings):
    settings.BACKUP_ROLE_ARN = "arn:aws:iam::000000000000:role/NoSuchRole"
    response = post_credentials(team_token(make_team()))
    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.STS_RETRY_AFTER_SECONDS)
    assert response.json() == {"error": "credentials are temporarily unavailable"}
    assert CredentialEvent.objects.get().reason == "sts_unavailable"


def test_unreachable_sts_is_a_503(s3_env, make_team, post_credentials, monkeypatch, settings):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings.STS_TIMEOUT_SECONDS = 1
    sts_client.cache_clear()
    response = post_credentials(team_token(make_team()))
    assert response.status_code == 503
    assert "Retry-After" in response


def test_unconfigured_role_is_a_503(db, make_team, post_credentials, settings):
    settings.BACKUP_ROLE_ARN = ""
    assert post_credentials(team_token(make_team())).status_code == 503


def test_assume_role_call_shape(moto_aws, make_team, post_credentials, settings):
    team = make_team()
    stubbed = {
        "Credentials": {"AccessKeyId": "stubbed-access-key-id", "SecretAccessKey": "s" * 40,
                        "SessionToken": "t" * 300, "Expiration": datetime(2030, 1, 1, tzinfo=timezone.utc)},
    }
    with Stubber(sts_client()) as stub:
        stub.add_response("assume_role", stubbed, {
            "RoleArn": settings.BACKUP_ROLE_ARN,
            "RoleSessionName": ANY,
            "DurationSeconds": 43200,
            "Policy": ANY,
            "SourceIdentity": f"cloudctl-team-{team.pk}",
            "Tags": [{"Key": "cloudctl-team", "Value": str(team.pk)}],
        })
        response = post_credentials(team_token(team))
        stub.assert_no_pending_responses()
    assert response.status_code == 200
    assert response.json()["Expiration"] == "2030-01-01T00:00:00Z"
    event = CredentialEvent.objects.get()
    assert event.session_name.startswith(f"cloudctl-team-{team.pk}-")
    assert len(event.session_name) <= 64


def test_ttl_comes_from_settings(moto_aws, make_team, post_credentials, settings):
    settings.CREDENTIALS_TTL = 3600
    response = post_credentials(team_token(make_team()))
    lifetime = parse_expiration(response.json()["Expiration"]) - datetime.now(timezone.utc)
    assert timedelta(minutes=55) < lifetime <= timedelta(hours=1)


def test_issuance_is_withheld_when_it_cannot_be_audited(s3_env, make_team, post_credentials, monkeypatch):
    from django.db import DatabaseError

    def broken(*args, **kwargs):
        raise DatabaseError("disk full")

    monkeypatch.setattr("credentials.services.record_issuance", broken)
    response = post_credentials(team_token(make_team()))
    assert response.status_code == 503
    assert "AccessKeyId" not in json.loads(response.content)


def test_a_database_failure_is_a_503_not_a_500(db, make_team, post_credentials, monkeypatch):
    from django.db import OperationalError

    def locked(team_id):
        raise OperationalError("database is locked")

    token = team_token(make_team())
    monkeypatch.setattr("credentials.ratelimit.team_with_recent_requests", locked)
    response = post_credentials(token)
    assert response.status_code == 503
    assert response.json() == {"error": "credentials are temporarily unavailable"}
    assert "Retry-After" in response


def test_an_issuance_is_recorded_with_every_field_and_no_secret(moto_aws, make_team, post_credentials):
    team = make_team()
    before = datetime.now(timezone.utc)
    response = post_credentials(team_token(team), query="?format=datasette-litestream",
                                HTTP_USER_AGENT="litestream/0.5 \x00probe", REMOTE_ADDR="10.0.0.7")
    answer = response.json()
    event = CredentialEvent.objects.get()
    assert (event.kind, event.team, event.client_ip, event.response_format) == (
        "issued", team, "10.0.0.7", "datasette-litestream")
    assert event.user_agent == "litestream/0.5 \N{REPLACEMENT CHARACTER}probe"  # storable everywhere
    assert event.access_key_id == answer["access-key-id"]
    assert event.expiration.replace(microsecond=0) == parse_expiration(answer["expiration"])
    assert before - timedelta(seconds=1) <= event.created_at <= datetime.now(timezone.utc)
    assert event.session_name.startswith(f"cloudctl-team-{team.pk}-")
    assert (event.reason, event.token_fingerprint, event.signal) == ("", "", "")
