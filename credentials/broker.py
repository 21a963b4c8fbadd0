"""The STS broker: one AssumeRole per exchange, confined by the team's session policy.

boto3 is configured the standard way (AWS_* variables, AWS_ENDPOINT_URL for a local server), so the same
code talks to AWS in production and to SeaweedFS on a laptop.
"""

import functools
import logging
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

import boto3
import botocore.session
import botocore.utils
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from teams.models import Team

from .policy import policy_document, team_read_only_session_policy, team_session_policy

logger = logging.getLogger(__name__)

MAX_ROLE_SESSION_NAME = 64
# The control plane's read-only sessions read a replica, or restore one, then are dropped: an hour, not the
# instances' CLOUDCTL_CREDENTIALS_TTL.
READ_ONLY_TTL_SECONDS = 3600
UNAVAILABLE_MESSAGE = "credentials are temporarily unavailable"


class BrokerUnavailable(Exception):
    """STS could not issue credentials. The message is safe to show; AWS's own text is never passed on."""


@dataclass(frozen=True)
class IssuedCredentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)
    expiration: datetime
    s3_folder: str
    session_name: str


# What CloudTrail shows for the broker's calls. A fixed User-Agent also spares botocore rebuilding its own
# (SDK, OS, features...) on every request: a tenth of the AssumeRole call's CPU.
USER_AGENT = "cloudctl/credential-broker"


def read_timestamp(value) -> datetime:
    """botocore's timestamp parser for the STS client. STS answers ISO 8601 in UTC ("2026-01-01T00:00:00Z"),
    which the standard library reads at a fraction of the CPU of botocore's default (dateutil, a fifth of the
    whole AssumeRole call); anything else, or a time without a zone, is left to botocore's own parser."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    return botocore.utils.parse_timestamp(value)


def encode_form_once(request, **kwargs) -> None:
    """botocore form-encodes a Query request's parameters each time it prepares the request, to sign it and then
    to send it, quoting the session policy's JSON a character at a time (a tenth of the call's CPU in all).
    Encoded here, on `before-sign` (botocore's hook for changing a request before it is signed), the one string
    is what is signed and what is sent."""
    if isinstance(request.data, dict):
        request.data = urlencode(list(request.data.items()), doseq=True)


@functools.cache
def _build_sts_client():
    botocore_session = botocore.session.get_session()
    botocore_session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=read_timestamp)
    client = boto3.session.Session(botocore_session=botocore_session).client(
        "sts",
        config=Config(
            connect_timeout=settings.STS_TIMEOUT_SECONDS,
            read_timeout=settings.STS_TIMEOUT_SECONDS,
            retries={"mode": "standard", "max_attempts": 2},
            user_agent=USER_AGENT,
        ),
    )
    client.meta.events.register("before-sign.sts.AssumeRole", encode_form_once)
    return client


_sts_client_lock = threading.Lock()


def sts_client():
    """One client per process, built once: creating one costs tens of milliseconds of CPU, every thread of a new
    server process asks at its first exchange, and a client is thread-safe to share only once built."""
    with _sts_client_lock:
        return _build_sts_client()


# Tests point boto3 elsewhere (moto, the local STS) and then forget the client built for the previous place.
sts_client.cache_clear = _build_sts_client.cache_clear


def role_session_name(team: Team, *, read_only: bool = False) -> str:
    """`cloudctl-team-<id>-<random>` (`cloudctl-team-<id>-ro-<random>` for the control plane's read-only
    sessions): shows up in CloudTrail and in `aws:userid` for per-team revocation."""
    name = f"cloudctl-team-{team.pk}-{'ro-' if read_only else ''}{secrets.token_hex(4)}"
    assert len(name) <= MAX_ROLE_SESSION_NAME
    return name


def assume_team_role(team: Team, *, read_only: bool = False) -> IssuedCredentials:
    """Credentials confined to the team's prefix: the instance's read-write ones, or with `read_only` the
    control plane's own for reading the team's replica (list and get only)."""
    if not settings.BACKUP_ROLE_ARN:
        logger.error("CLOUDCTL_BACKUP_ROLE_ARN is not set; cannot issue credentials")
        raise BrokerUnavailable("credentials are not configured")
    session_name = role_session_name(team, read_only=read_only)
    session_policy = team_read_only_session_policy if read_only else team_session_policy
    request = {
        "RoleArn": settings.BACKUP_ROLE_ARN,
        "RoleSessionName": session_name,
        "DurationSeconds": READ_ONLY_TTL_SECONDS if read_only else settings.CREDENTIALS_TTL,
        "Policy": policy_document(session_policy(settings.BACKUP_BUCKET, team.pk)),
    }
    if settings.STS_TRACE:
        request["SourceIdentity"] = f"cloudctl-team-{team.pk}"
        request["Tags"] = [{"Key": "cloudctl-team", "Value": str(team.pk)}]
    try:
        response = sts_client().assume_role(**request)
    except ClientError as error:
        # AWS messages can name the account and role: log the code and request id only.
        meta = error.response.get("ResponseMetadata", {})
        logger.error(
            "AssumeRole failed for team %s: %s (HTTP %s, request id %s)", team.pk,
            error.response.get("Error", {}).get("Code", "unknown"), meta.get("HTTPStatusCode"), meta.get("RequestId"),
        )
        raise BrokerUnavailable(UNAVAILABLE_MESSAGE) from None
    except BotoCoreError as error:
        logger.error("AssumeRole failed for team %s: %s", team.pk, type(error).__name__)
        raise BrokerUnavailable(UNAVAILABLE_MESSAGE) from None
    credentials = response["Credentials"]
    return IssuedCredentials(
        access_key_id=credentials["AccessKeyId"],
        secret_access_key=credentials["SecretAccessKey"],
        session_token=credentials["SessionToken"],
        expiration=credentials["Expiration"],
        s3_folder=f"s3://{settings.BACKUP_BUCKET}/{team.storage_prefix}",
        session_name=session_name,
    )
