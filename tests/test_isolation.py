"""Isolation on a server that enforces session policies (SeaweedFS), with credentials from the endpoint.

The matrix follows shared/reference/local-s3-sts-seaweedfs.md section 5. moto is deliberately not used:
it ignores session policies, which the last test demonstrates.
"""

import io
import json
import posixpath
import uuid
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from django.core.management import call_command
from django.core.management.base import CommandError

from cloudctl.local_s3 import REGION
from credentials import isolation
from credentials.policy import policy_document, team_session_policy
from teams.tokens import team_token

DENIED = {"AccessDenied", "403", "Forbidden"}


def s3_with(credentials, endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"], aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"], config=Config(retries={"max_attempts": 1}),
    )


def admin_s3(config):
    return boto3.client(
        "s3", endpoint_url=config.endpoint_url, region_name=REGION,
        aws_access_key_id=config.admin_access_key, aws_secret_access_key=config.admin_secret_key,
    )


def assert_denied(call, *args, **kwargs):
    with pytest.raises(ClientError) as error:
        call(*args, **kwargs)
    assert error.value.response["Error"]["Code"] in DENIED, error.value.response["Error"]


@pytest.fixture
def teams(s3_env, make_team, post_credentials):
    """Two teams whose ids make team A's prefix a string prefix of a sibling's (team-N vs team-N0)."""
    team_a, team_b = make_team(), make_team()
    creds = {}
    for team in (team_a, team_b):
        response = post_credentials(team_token(team))
        assert response.status_code == 200
        creds[team.pk] = s3_with(response.json(), s3_env.endpoint_url)
    admin = admin_s3(s3_env)
    run = uuid.uuid4().hex
    other_key = f"team-{team_b.pk}/{run}/y"
    admin.put_object(Bucket=s3_env.bucket, Key=other_key, Body=b"team b data")
    return {"a": team_a, "b": team_b, "s3_a": creds[team_a.pk], "admin": admin, "run": run,
            "bucket": s3_env.bucket, "other_key": other_key}


def test_own_prefix_put_get_list_head_delete(teams):
    s3, bucket = teams["s3_a"], teams["bucket"]
    key = f"team-{teams['a'].pk}/{teams['run']}/x"
    s3.put_object(Bucket=bucket, Key=key, Body=b"hello")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello"
    s3.head_object(Bucket=bucket, Key=key)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"team-{teams['a'].pk}/")
    assert key in [item["Key"] for item in listed["Contents"]]
    assert all(item["Key"].startswith(f"team-{teams['a'].pk}/") for item in listed["Contents"])
    s3.delete_object(Bucket=bucket, Key=key)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix=f"team-{teams['a'].pk}/{teams['run']}/")


def test_other_team_prefix_is_denied(teams):
    s3, bucket, other = teams["s3_a"], teams["bucket"], teams["other_key"]
    b_prefix = f"team-{teams['b'].pk}/"
    assert_denied(s3.put_object, Bucket=bucket, Key=f"{b_prefix}{teams['run']}/x", Body=b"x")
    assert_denied(s3.get_object, Bucket=bucket, Key=other)
    assert_denied(s3.head_object, Bucket=bucket, Key=other)
    assert_denied(s3.list_objects_v2, Bucket=bucket, Prefix=b_prefix)
    assert_denied(s3.delete_object, Bucket=bucket, Key=other)
    assert_denied(s3.copy_object, Bucket=bucket, Key=f"team-{teams['a'].pk}/stolen",
                  CopySource={"Bucket": bucket, "Key": other})
    assert teams["admin"].get_object(Bucket=bucket, Key=other)["Body"].read() == b"team b data"


def test_listing_without_prefix_or_slash_is_denied(teams):
    s3, bucket = teams["s3_a"], teams["bucket"]
    assert_denied(s3.list_objects_v2, Bucket=bucket)
    assert_denied(s3.list_objects_v2, Bucket=bucket, Prefix=f"team-{teams['a'].pk}")


def test_sibling_prefix_is_denied(teams):
    s3, bucket = teams["s3_a"], teams["bucket"]
    sibling = f"team-{teams['a'].pk}0/"
    assert_denied(s3.list_objects_v2, Bucket=bucket, Prefix=sibling)
    assert_denied(s3.put_object, Bucket=bucket, Key=f"{sibling}x", Body=b"x")


def test_other_buckets_are_denied(teams):
    s3 = teams["s3_a"]
    assert_denied(s3.create_bucket, Bucket=f"other-{teams['run'][:8]}")
    assert_denied(s3.list_objects_v2, Bucket=f"other-{teams['run'][:8]}")


def test_multipart_upload_only_in_own_prefix(teams):
    s3, bucket = teams["s3_a"], teams["bucket"]
    key = f"team-{teams['a'].pk}/{teams['run']}/big.bin"
    part = b"x" * (5 * 1024 * 1024)
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    etags = [s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=n, Body=part)["ETag"]
             for n in (1, 2)]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]})
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == 2 * len(part)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key=f"{key}.2")
    s3.abort_multipart_upload(Bucket=bucket, Key=f"{key}.2", UploadId=aborted["UploadId"])
    assert_denied(s3.create_multipart_upload, Bucket=bucket, Key=f"team-{teams['b'].pk}/big.bin")


def test_tampered_session_token_is_rejected(s3_env, make_team, post_credentials):
    team_a, team_b = make_team(), make_team()
    creds_a = post_credentials(team_token(team_a)).json()
    creds_b = post_credentials(team_token(team_b)).json()
    mixed = dict(creds_a, SessionToken=creds_b["SessionToken"])
    with pytest.raises(ClientError) as error:
        s3_with(mixed, s3_env.endpoint_url).put_object(Bucket=s3_env.bucket, Key=f"team-{team_b.pk}/x", Body=b"x")
    assert error.value.response["Error"]["Code"] in DENIED | {"InvalidAccessKeyId", "SignatureDoesNotMatch"}


def test_control_without_session_policy_the_role_alone_does_not_confine(s3_env, make_team):
    """Proves the session policy is what does the work: the same role without it reads team B's data."""
    team_b = make_team()
    admin = admin_s3(s3_env)
    admin.put_object(Bucket=s3_env.bucket, Key=f"team-{team_b.pk}/control", Body=b"b")
    sts = boto3.client("sts")
    unconfined = sts.assume_role(RoleArn=s3_env.client_environ()["CLOUDCTL_BACKUP_ROLE_ARN"],
                                 RoleSessionName="control", DurationSeconds=900)["Credentials"]
    s3 = s3_with(unconfined, s3_env.endpoint_url)
    assert s3.get_object(Bucket=s3_env.bucket, Key=f"team-{team_b.pk}/control")["Body"].read() == b"b"


def test_policy_document_is_accepted_by_sts(s3_env):
    response = boto3.client("sts").assume_role(
        RoleArn=s3_env.client_environ()["CLOUDCTL_BACKUP_ROLE_ARN"], RoleSessionName="shape",
        DurationSeconds=43200, Policy=policy_document(team_session_policy(s3_env.bucket, 10**12)))
    assert response["Credentials"]["AccessKeyId"]
    assert json.loads(policy_document(team_session_policy(s3_env.bucket, 1)))


def test_check_isolation_passes_on_seaweedfs(s3_env, db, capsys):
    call_command("check_isolation")
    output = capsys.readouterr().out
    assert "isolation holds: 30 of 30 checks passed" in output
    assert "FAIL" not in output
    # No probe object is left behind.
    listed = admin_s3(s3_env).list_objects_v2(Bucket=s3_env.bucket)
    assert not [item["Key"] for item in listed.get("Contents", []) if ".cloudctl-isolation-probe" in item["Key"]]


def test_check_isolation_catches_a_leak_on_moto(moto_aws, db, capsys):
    """moto does not evaluate session policies: the check must notice and fail."""
    with pytest.raises(CommandError, match="isolation check FAILED"):
        call_command("check_isolation")
    failed = [line.split()[2] for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    # Copies out of the other team's prefix are probed too, and moto lets them through.
    assert {"get", "put", "delete", "list", "copy-object", "upload-part-copy"} <= set(failed)


class DictS3:
    """An S3 that enforces nothing; `resolve_dots` makes it resolve `..` in keys as a careless server might."""

    def __init__(self, resolve_dots: bool):
        self.objects, self.resolve_dots = {}, resolve_dots

    def _key(self, key):
        return posixpath.normpath(key) if self.resolve_dots else key

    def put_object(self, Bucket, Key, Body):
        self.objects[self._key(Key)] = Body

    def get_object(self, Bucket, Key):
        if self._key(Key) not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[self._key(Key)])}

    def delete_object(self, Bucket, Key):
        self.objects.pop(self._key(Key), None)


@pytest.mark.parametrize("resolve_dots, expected", [(True, "allowed"), (False, "contained")])
def test_dot_segment_probes_catch_a_server_that_resolves_dots(resolve_dots, expected, settings):
    s3 = DictS3(resolve_dots)
    actor, other = SimpleNamespace(slug="a", storage_prefix="team-1/"), SimpleNamespace(slug="b", storage_prefix="team-2/")
    other_key = "team-2/.cloudctl-isolation-probe/run"
    s3.put_object(Bucket=settings.BACKUP_BUCKET, Key=other_key, Body=b"team b data")
    checks = isolation._dot_segment_checks(actor, s3, other, other_key, lambda: isolation._read(s3, other_key))
    assert [(check.operation, check.target, check.actual) for check in checks] == [
        ("get", "team-1/../team-2/.cloudctl-isolation-probe/run", expected),
        ("put", "team-1/../team-2/.cloudctl-isolation-probe/run", expected),
    ]
    assert all(check.passed == (expected == "contained") for check in checks)
