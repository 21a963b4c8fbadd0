"""What one credential exchange costs the control plane: its statements (a renewal takes the database's write lock
for its audit row only), the shared STS client (built once per process, however many threads ask at once) and the
work botocore does around the AssumeRole call. bench/credentials.py measures the throughput these keep up."""

import re
import threading
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from credentials.broker import read_timestamp, sts_client
from credentials.models import CredentialEvent
from instances.models import Instance
from teams.models import TeamEvent
from teams.tokens import team_token

BOOT = "boot-id-of-this-start-0001"
WRITE = re.compile(r"\s*(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def exchange_statements(post_credentials, token: str, **headers) -> list[str]:
    """The SQL statements one exchange runs, once it has answered 200."""
    with CaptureQueriesContext(connection) as queries:
        response = post_credentials(token, **headers)
    assert response.status_code == 200, response.content
    return [query["sql"] for query in queries.captured_queries]


def writes(statements: list[str]) -> list[str]:
    return [sql for sql in statements if WRITE.match(sql)]


def test_a_renewal_of_the_current_boot_writes_only_its_audit_row(moto_aws, make_team, post_credentials):
    team = make_team()
    Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, boot_id=BOOT)
    statements = exchange_statements(post_credentials, team_token(team), HTTP_X_CLOUDCTL_BOOT=BOOT)
    # No UPDATE of the instance row (not even one that changes nothing: on SQLite it still waits for the write
    # lock): the team read already says which boot is recorded.
    assert [sql.split("(")[0].split() for sql in writes(statements)] == [
        ["INSERT", "INTO", f'"{CredentialEvent._meta.db_table}"']]
    assert len(statements) == 2  # the team read (its limit and recorded boot in one statement) and the audit row
    assert Instance.objects.get(team=team).boot_id == BOOT


def test_a_new_boot_is_recorded_in_one_update_of_the_instance(moto_aws, make_team, post_credentials):
    """The usual start: the backup watch is on (nothing to resume), so recording the boot is the one UPDATE."""
    team = make_team()
    instance = Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, boot_id=BOOT)
    assert instance.backups_expected_since is not None
    statements = exchange_statements(post_credentials, team_token(team),
                                     HTTP_X_CLOUDCTL_BOOT="boot-id-of-the-next-start")
    instance_updates = [sql for sql in writes(statements) if sql.startswith(f'UPDATE "{Instance._meta.db_table}"')]
    assert len(instance_updates) == 1 and "boot_id" in instance_updates[0]
    assert len(statements) == 3  # the team read, the audit row and the boot
    instance.refresh_from_db()
    assert instance.boot_id == "boot-id-of-the-next-start"
    assert not TeamEvent.objects.filter(team=team, kind=TeamEvent.Kind.BACKUP_WATCH_RESUMED).exists()


def test_an_exchange_without_a_boot_id_writes_only_its_audit_row(moto_aws, make_team, post_credentials):
    team = make_team()
    Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, boot_id=BOOT)
    statements = exchange_statements(post_credentials, team_token(team))
    assert len(writes(statements)) == 1
    assert Instance.objects.get(team=team).boot_id == BOOT


def test_threads_asking_for_the_sts_client_at_once_build_one(monkeypatch):
    """A new server process's threads all ask at their first exchange: one builds, the others wait for it
    (building a boto3 client takes tens of milliseconds of CPU, and sharing one while it is built is unsafe)."""
    built = []
    build_client = boto3.session.Session.client

    def slow_client(session, *args, **kwargs):
        time.sleep(0.05)  # long enough for every thread to have asked meanwhile
        client = build_client(session, *args, **kwargs)
        built.append(client)
        return client

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3.session.Session, "client", slow_client)
    sts_client.cache_clear()
    threads_count = 8
    start = threading.Barrier(threads_count)
    received = []

    def ask():
        start.wait()
        received.append(sts_client())

    threads = [threading.Thread(target=ask) for _ in range(threads_count)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sts_client.cache_clear()
    assert len(built) == 1
    assert len(received) == threads_count and all(client is built[0] for client in received)


def test_the_broker_names_cloudctl_as_the_user_agent(moto_aws, make_team, post_credentials):
    """A fixed User-Agent, which CloudTrail shows: botocore otherwise rebuilds its own on every request
    (a tenth of the AssumeRole call's CPU)."""
    seen = []

    def record_user_agent(request, **kwargs):
        user_agent = request.headers["User-Agent"]
        seen.append(user_agent.decode() if isinstance(user_agent, bytes) else user_agent)

    sts_client().meta.events.register_first("before-send.sts.AssumeRole", record_user_agent)
    assert post_credentials(team_token(make_team())).status_code == 200
    assert len(seen) == 1 and seen[0].startswith("cloudctl/")


def test_the_broker_reads_sts_timestamps_without_dateutil(moto_aws, make_team, post_credentials, monkeypatch):
    """STS answers ISO 8601 in UTC, which the standard library reads; botocore's default (dateutil) took a fifth
    of the AssumeRole call's CPU."""
    import dateutil.parser

    parsed_by_dateutil = []
    parse = dateutil.parser.parse

    def recorded(*args, **kwargs):
        parsed_by_dateutil.append(args[0])
        return parse(*args, **kwargs)

    monkeypatch.setattr(dateutil.parser, "parse", recorded)
    response = post_credentials(team_token(make_team()))
    assert response.status_code == 200
    assert parsed_by_dateutil == []
    expiration = CredentialEvent.objects.get().expiration
    assert expiration.utcoffset() == timedelta(0)
    assert response.json()["Expiration"] == expiration.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T23:13:54Z", datetime(2026, 11, 26, 23, 13, 54, tzinfo=timezone.utc)),
    ("2026-11-26T23:13:54.123Z", datetime(2026, 11, 26, 23, 13, 54, 123000, tzinfo=timezone.utc)),
    ("2026-11-27T01:13:54+02:00", datetime(2026, 11, 26, 23, 13, 54, tzinfo=timezone.utc)),
    # What the standard library does not read (or reads without a zone) goes to botocore's own parser.
    ("Thu, 26 Nov 2026 23:13:54 GMT", datetime(2026, 11, 26, 23, 13, 54, tzinfo=timezone.utc)),
    (1795734834, datetime(2026, 11, 26, 23, 13, 54, tzinfo=timezone.utc)),
])
def test_sts_timestamps_are_read_as_utc_moments(text, expected):
    assert read_timestamp(text) == expected


def test_the_assume_role_parameters_are_form_encoded_once(s3_env, make_team, post_credentials, monkeypatch):
    """botocore encodes a Query request's parameters each time it prepares the request (to sign it, then to send
    it), quoting the session policy's JSON a character at a time; the broker hands it the encoded form once. The
    local STS checks the signature: the credentials it issues prove the signed body is the one sent."""
    import botocore.awsrequest

    encoded_by_botocore = []
    urlencode = botocore.awsrequest.urlencode

    def recorded(query, *args, **kwargs):
        encoded_by_botocore.append(query)
        return urlencode(query, *args, **kwargs)

    monkeypatch.setattr(botocore.awsrequest, "urlencode", recorded)
    response = post_credentials(team_token(make_team()))
    assert response.status_code == 200
    assert response.json()["SessionToken"]
    assert encoded_by_botocore == []
