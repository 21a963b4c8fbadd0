"""Proves, on the configured storage, that two teams' vended credentials stay in their own prefixes.

Each team writes a probe object under its own prefix, then every operation is tried both on its own data
(must work) and on the other team's, on a listing with no prefix and on a sibling prefix, and as a copy
source for CopyObject and UploadPartCopy (must be denied). An operation on another team's data that does
not answer AccessDenied counts as a leak.

Keys with `..` segments (`team-<me>/../team-<other>/...`) are a different question: S3 treats them as
literal keys inside the caller's own prefix, so AWS may rightly allow them; a server that resolved the dots
*after* checking the policy would hand over the other team's object. Those probes pass when the other
team's object was neither read nor changed, whatever the server answered.
"""

import functools
import uuid
from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError
from django.conf import settings

from teams.models import Team

from .broker import IssuedCredentials, assume_team_role

ALLOWED, DENIED, ERROR = "allowed", "denied", "error"
# A dot-segment probe that did not reach the other team's object (denied, not found, or a literal own key).
CONTAINED = "contained"
DENIAL_CODES = {"AccessDenied", "403", "Forbidden"}
PROBE_FOLDER = ".cloudctl-isolation-probe"


@dataclass(frozen=True)
class Check:
    actor: str
    operation: str
    target: str
    expected: str
    actual: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.expected == self.actual


def _s3_for(issued: IssuedCredentials):
    return boto3.session.Session().client(
        "s3",
        aws_access_key_id=issued.access_key_id,
        aws_secret_access_key=issued.secret_access_key,
        aws_session_token=issued.session_token,
    )


def _attempt(call) -> tuple[str, str]:
    try:
        call()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        return (DENIED, code) if code in DENIAL_CODES else (ERROR, code)
    return ALLOWED, ""


def _upload_part_copy(s3, bucket: str, key: str, source_key: str) -> None:
    """UploadPartCopy of `source_key` into a multipart upload on the caller's own `key`, always aborted."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    try:
        s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": source_key})
    finally:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def _dot_segment_checks(actor: Team, s3, other: Team, other_key: str, read_other) -> list[Check]:
    """GET and PUT on `team-<me>/../<other key>`: contained unless the other team's probe was read or changed."""
    bucket = settings.BACKUP_BUCKET
    dotted = f"{actor.storage_prefix}../{other_key}"
    before = read_other()
    checks = []

    def get():
        try:
            body = s3.get_object(Bucket=bucket, Key=dotted)["Body"].read()
        except ClientError as error:
            return CONTAINED, error.response.get("Error", {}).get("Code", "")
        if before is not None and body == before:
            return ALLOWED, "read the other team's object"
        return CONTAINED, "a literal own key"

    def put():
        actual, detail = _attempt(lambda: s3.put_object(Bucket=bucket, Key=dotted, Body=b"overwritten"))
        if read_other() != before:
            return ALLOWED, "changed the other team's object"
        if actual == ALLOWED:
            s3.delete_object(Bucket=bucket, Key=dotted)  # a literal key under our own prefix: tidy it up
            return CONTAINED, "a literal own key"
        return CONTAINED, detail

    for operation, probe in (("get", get), ("put", put)):
        actual, detail = probe()
        checks.append(Check(actor.slug, operation, dotted, CONTAINED, actual, detail))
    return checks


def _checks_for(actor: Team, s3, own_key: str, other: Team, other_key: str, read_other) -> list[Check]:
    bucket = settings.BACKUP_BUCKET
    sibling = f"team-{actor.pk}0/{PROBE_FOLDER}/{uuid.uuid4().hex}"
    copy_key = f"{actor.storage_prefix}{PROBE_FOLDER}/{uuid.uuid4().hex}"
    body = b"cloudctl isolation probe"
    plan = [
        ("put", own_key, ALLOWED, lambda: s3.put_object(Bucket=bucket, Key=own_key, Body=body)),
        ("get", own_key, ALLOWED, lambda: s3.get_object(Bucket=bucket, Key=own_key)["Body"].read()),
        ("list", actor.storage_prefix, ALLOWED, lambda: s3.list_objects_v2(Bucket=bucket, Prefix=actor.storage_prefix)),
        ("get", other_key, DENIED, lambda: s3.get_object(Bucket=bucket, Key=other_key)["Body"].read()),
        ("put", other_key, DENIED, lambda: s3.put_object(Bucket=bucket, Key=other_key, Body=b"overwritten")),
        ("delete", other_key, DENIED, lambda: s3.delete_object(Bucket=bucket, Key=other_key)),
        ("list", other.storage_prefix, DENIED, lambda: s3.list_objects_v2(Bucket=bucket, Prefix=other.storage_prefix)),
        ("list", "(no prefix)", DENIED, lambda: s3.list_objects_v2(Bucket=bucket)),
        ("list", f"team-{actor.pk}", DENIED, lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"team-{actor.pk}")),
        ("put", sibling, DENIED, lambda: s3.put_object(Bucket=bucket, Key=sibling, Body=body)),
        ("copy-object", f"{other_key} -> {copy_key}", DENIED, lambda: s3.copy_object(
            Bucket=bucket, Key=copy_key, CopySource={"Bucket": bucket, "Key": other_key})),
        ("upload-part-copy", f"{other_key} -> {copy_key}", DENIED,
         lambda: _upload_part_copy(s3, bucket, copy_key, other_key)),
    ]
    checks = []
    for operation, target, expected, call in plan:
        actual, detail = _attempt(call)
        checks.append(Check(actor.slug, operation, target, expected, actual, detail))
        if actual == ALLOWED and expected == DENIED:
            # A leak: don't leave the probe (or the stolen copy) behind.
            for leaked in (sibling, copy_key):
                _attempt(lambda: s3.delete_object(Bucket=bucket, Key=leaked))
    return checks + _dot_segment_checks(actor, s3, other, other_key, read_other)


def _read(s3, key: str) -> bytes | None:
    """A team reading its own probe: what "unchanged" means for the other team's dot-segment probes. None when
    it is gone (an earlier leak may have deleted it)."""
    try:
        return s3.get_object(Bucket=settings.BACKUP_BUCKET, Key=key)["Body"].read()
    except ClientError:
        return None


def run_isolation_checks(team_a: Team, team_b: Team) -> list[Check]:
    """Mint real credentials for both teams and try every operation; leaves no probe object behind."""
    bucket = settings.BACKUP_BUCKET
    run = uuid.uuid4().hex
    clients = {team.pk: _s3_for(assume_team_role(team)) for team in (team_a, team_b)}
    keys = {team.pk: f"{team.storage_prefix}{PROBE_FOLDER}/{run}" for team in (team_a, team_b)}
    # Both probes exist before any cross-team read, so "denied" cannot be confused with "not found".
    for team in (team_a, team_b):
        clients[team.pk].put_object(Bucket=bucket, Key=keys[team.pk], Body=b"cloudctl isolation probe")
    checks = []
    try:
        for actor, other in ((team_a, team_b), (team_b, team_a)):
            checks += _checks_for(actor, clients[actor.pk], keys[actor.pk], other, keys[other.pk],
                                  functools.partial(_read, clients[other.pk], keys[other.pk]))
    finally:
        for team in (team_a, team_b):
            actual, detail = _attempt(lambda: clients[team.pk].delete_object(Bucket=bucket, Key=keys[team.pk]))
            checks.append(Check(team.slug, "delete", keys[team.pk], ALLOWED, actual, detail))
    return checks


def probe_teams() -> tuple[Team, Team]:
    """Two disabled teams kept for the check: real prefixes, never able to use the private API."""
    teams = []
    for suffix in ("a", "b"):
        team, _ = Team.objects.get_or_create(
            slug=f"isolation-probe-{suffix}",
            defaults={"name": f"Isolation probe {suffix.upper()}", "status": Team.Status.DISABLED},
        )
        teams.append(team)
    return teams[0], teams[1]
