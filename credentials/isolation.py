"""Proves, on the configured storage, that two teams' vended credentials stay in their own prefixes.

Each team writes a probe object under its own prefix, then every operation is tried both on its own data
(must work) and on the other team's, on a listing with no prefix and on a sibling prefix (must be denied).
An operation on another team's data that does not answer AccessDenied counts as a leak.
"""

import uuid
from dataclasses import dataclass

import boto3
from botocore.exceptions import ClientError
from django.conf import settings

from teams.models import Team

from .broker import IssuedCredentials, assume_team_role

ALLOWED, DENIED, ERROR = "allowed", "denied", "error"
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


def _checks_for(actor: Team, s3, own_key: str, other: Team, other_key: str) -> list[Check]:
    bucket = settings.BACKUP_BUCKET
    sibling = f"team-{actor.pk}0/{PROBE_FOLDER}/{uuid.uuid4().hex}"
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
    ]
    checks = []
    for operation, target, expected, call in plan:
        actual, detail = _attempt(call)
        checks.append(Check(actor.slug, operation, target, expected, actual, detail))
        if operation == "put" and target == sibling and actual == ALLOWED:
            s3.delete_object(Bucket=bucket, Key=sibling)  # a leak: don't leave the probe behind
    return checks


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
            checks += _checks_for(actor, clients[actor.pk], keys[actor.pk], other, keys[other.pk])
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
