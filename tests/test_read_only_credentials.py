"""The control plane's read-only credentials for a team's prefix, on a server that enforces session policies
(SeaweedFS): they list and get the team's objects, cannot write or delete there, and cannot read another team's."""

import uuid
from datetime import timedelta

import boto3
import pytest
from botocore.config import Config
from django.db import connection
from django.utils import timezone

from cloudctl.local_s3 import REGION
from credentials import ratelimit
from credentials.models import CredentialEvent
from credentials.services import mint_read_only_credentials

from .test_isolation import admin_s3, assert_denied


def s3_for(issued, endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=issued.access_key_id,
        aws_secret_access_key=issued.secret_access_key, aws_session_token=issued.session_token,
        config=Config(retries={"max_attempts": 1}))


@pytest.fixture
def replica(s3_env, make_team):
    """Two teams with an object each (written with the admin keys) and team A's read-only S3 client."""
    team_a, team_b = make_team(), make_team()
    admin, run = admin_s3(s3_env), uuid.uuid4().hex
    own_key, other_key = f"team-{team_a.pk}/{run}/data.db/ltx/0/x", f"team-{team_b.pk}/{run}/data.db/ltx/0/y"
    admin.put_object(Bucket=s3_env.bucket, Key=own_key, Body=b"team a data")
    admin.put_object(Bucket=s3_env.bucket, Key=other_key, Body=b"team b data")
    issued = mint_read_only_credentials(team_a, actor="test restore")
    yield {"team": team_a, "issued": issued, "s3": s3_for(issued, s3_env.endpoint_url), "admin": admin,
           "bucket": s3_env.bucket, "own_key": own_key, "other_key": other_key, "other": team_b}
    for key in (own_key, other_key):
        admin.delete_object(Bucket=s3_env.bucket, Key=key)


def test_read_only_credentials_list_and_get_the_teams_objects(replica):
    s3, bucket, key = replica["s3"], replica["bucket"], replica["own_key"]
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=replica["team"].storage_prefix)
    assert key in [item["Key"] for item in listed.get("Contents", [])]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"team a data"
    assert s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-3")["Body"].read() == b"team"
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(b"team a data")


def test_read_only_credentials_cannot_write_or_delete_in_the_teams_prefix(replica):
    s3, bucket, key, admin = replica["s3"], replica["bucket"], replica["own_key"], replica["admin"]
    assert_denied(s3.put_object, Bucket=bucket, Key=key, Body=b"overwritten")
    assert_denied(s3.put_object, Bucket=bucket, Key=f"{replica['team'].storage_prefix}new", Body=b"new")
    assert_denied(s3.delete_object, Bucket=bucket, Key=key)
    # DeleteObjects answers 200 and reports each key's refusal in the body (S3's contract).
    batch = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}]})
    assert [(error["Key"], error["Code"]) for error in batch.get("Errors", [])] == [(key, "AccessDenied")]
    assert not batch.get("Deleted")
    assert_denied(s3.create_multipart_upload, Bucket=bucket, Key=f"{replica['team'].storage_prefix}multipart")
    assert_denied(s3.copy_object, Bucket=bucket, Key=f"{key}-copy", CopySource={"Bucket": bucket, "Key": key})
    assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == b"team a data"


def test_read_only_credentials_cannot_read_another_team(replica):
    s3, bucket, other = replica["s3"], replica["bucket"], replica["other"]
    assert_denied(s3.get_object, Bucket=bucket, Key=replica["other_key"])
    assert_denied(s3.head_object, Bucket=bucket, Key=replica["other_key"])
    assert_denied(s3.list_objects_v2, Bucket=bucket, Prefix=other.storage_prefix)
    assert_denied(s3.list_objects_v2, Bucket=bucket)
    assert_denied(s3.list_objects_v2, Bucket=bucket, Prefix=f"team-{replica['team'].pk}")


def test_minting_is_audited_without_secrets_and_never_counts_against_the_team(replica):
    issued, team = replica["issued"], replica["team"]
    event = CredentialEvent.objects.get(team=team)
    assert (event.kind, event.actor, event.access_key_id, event.session_name) == (
        CredentialEvent.Kind.READ_ONLY, "test restore", issued.access_key_id, issued.session_name)
    assert issued.session_name.startswith(f"cloudctl-team-{team.pk}-ro-")
    assert issued.expiration <= timezone.now() + timedelta(hours=1)  # not the instances' 12 hours
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM credentials_credentialevent")
        stored = repr(cursor.fetchall())
    assert issued.secret_access_key not in stored and issued.session_token not in stored
    # The team's own exchanges are limited by what it asked for, not by what the control plane read.
    assert ratelimit.team_with_recent_requests(team.pk).recent_requests == 0


def test_the_timeline_shows_a_read_only_issuance_as_the_actor_s_not_as_a_refusal(make_team):
    from console.selectors import timeline

    team = make_team()
    CredentialEvent.objects.create(kind=CredentialEvent.Kind.READ_ONLY, team=team, actor="manage.py restore",
                                   access_key_id="ASIAEXAMPLE", session_name=f"cloudctl-team-{team.pk}-ro-00")
    [entry] = timeline(team)
    assert (entry.kind, entry.actor, entry.is_error) == ("credentials:read_only", "manage.py restore", False)
    assert "ASIAEXAMPLE" in entry.message and "refused" not in entry.message


def test_only_an_actor_who_sees_the_fleet_may_have_them_minted(make_team, django_user_model):
    from django.core.exceptions import PermissionDenied

    team = make_team()
    outsider = django_user_model.objects.create_user("outsider", is_staff=True)
    with pytest.raises(PermissionDenied):
        mint_read_only_credentials(team, actor=outsider)
    assert not CredentialEvent.objects.exists()
