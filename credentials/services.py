"""The credential exchange: token in, confined STS credentials out, every step audited. And the instance
signals: a signed URL in, the team's backup or scale-to-zero state recorded."""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.urls import reverse

from teams.instance_signals import record_backup_heartbeat, record_scale_to_zero
from teams.models import Team

from . import ratelimit
from .audit import Client, record_issuance, record_refusal
from .broker import UNAVAILABLE_MESSAGE, BrokerUnavailable, IssuedCredentials, assume_team_role
from .formats import RENDERERS
from .models import CredentialEvent
from .tokens import SIGNAL_SALT, InvalidToken, TeamDisabled, check_claims, read_team_token, signal_value

logger = logging.getLogger(__name__)
Reason = CredentialEvent.Reason
# One message for every bad token, so a caller cannot tell forged from revoked or unknown.
INVALID_TOKEN_MESSAGE = "invalid token"


class ExchangeRefused(Exception):
    """A refusal to answer with `status` and a message that is safe to show the caller."""

    def __init__(self, status: int, message: str, *, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Exchange:
    team: Team
    credentials: IssuedCredentials


def refuse(status: int, message: str, reason: str, client: Client, *, retry_after: int | None = None,
           **audit) -> ExchangeRefused:
    """Record a refusal and build the exception to raise."""
    record_refusal(reason, client, **audit)
    return ExchangeRefused(status, message, retry_after=retry_after)


def exchange_token(token: str | None, response_format: str, client: Client) -> Exchange:
    """Swap a team token for STS credentials confined to the team's prefix; raise ExchangeRefused."""
    audit = {"token": token, "response_format": response_format}
    if response_format not in RENDERERS:
        raise refuse(400, f"unknown format; use one of: {', '.join(RENDERERS)}", Reason.BAD_REQUEST, client, **audit)
    if not token:
        raise refuse(401, "missing token", Reason.MISSING_TOKEN, client, **audit)
    try:
        claims = read_team_token(token)
        team, recent_requests = ratelimit.team_with_recent_requests(claims.team_id)
        team = check_claims(claims, team)
    except InvalidToken as invalid:
        audit.update(team=invalid.team, claimed_team_id=invalid.claimed_team_id)
        if ratelimit.address_is_over_limit(client.ip):
            limit = ratelimit.address_limit()
            raise refuse(429, "too many invalid tokens from this address", Reason.ADDRESS_RATE_LIMITED, client,
                         retry_after=limit.seconds, **audit) from None
        raise refuse(401, INVALID_TOKEN_MESSAGE, invalid.reason, client, **audit) from None
    except TeamDisabled as disabled:
        raise refuse(403, "team disabled", Reason.TEAM_DISABLED, client, team=disabled.team, **audit) from None
    limit = ratelimit.team_limit()
    if recent_requests >= limit.count:
        raise refuse(429, "too many credential requests for this team", Reason.TEAM_RATE_LIMITED, client,
                     team=team, retry_after=limit.seconds, **audit)
    try:
        issued = assume_team_role(team)
    except BrokerUnavailable as unavailable:
        raise refuse(503, str(unavailable), Reason.STS_UNAVAILABLE, client, team=team,
                     retry_after=settings.STS_RETRY_AFTER_SECONDS, **audit) from None
    try:
        record_issuance(team, client, response_format, issued)
    except DatabaseError:
        # Fail closed: credentials that could not be recorded are never handed out.
        logger.exception("could not record an issuance for team %s; credentials withheld", team.pk)
        raise ExchangeRefused(503, UNAVAILABLE_MESSAGE, retry_after=settings.STS_RETRY_AFTER_SECONDS) from None
    return Exchange(team=team, credentials=issued)


def render_credentials(exchange: Exchange, response_format: str, absolute_url: Callable[[str], str]) -> dict:
    """The credentials in the requested contract, plus the team's signal URLs under `Signals` (every client
    of these contracts ignores keys it does not know)."""
    return {**RENDERERS[response_format](exchange.credentials), "Signals": signal_urls(exchange.team, absolute_url)}


# --- instance signals --------------------------------------------------------------------------------------

SIGNAL_RECORDERS = {
    "backup": lambda team, report: record_backup_heartbeat(team),  # Litestream's heartbeat-url
    "shutdown": record_scale_to_zero,  # datasette-scale-to-zero's shutdown_url
}
INVALID_SIGNAL_MESSAGE = "invalid signal URL"


def signal_urls(team: Team, absolute_url: Callable[[str], str]) -> dict:
    """The URLs the instance configures, on the address it reached us at. They embed a signed value bound to
    the team and its token generation: rotating the token revokes them."""
    # One reverse() for both (it costs a tenth of a millisecond, on every exchange): they differ in one segment.
    heartbeat = absolute_url(reverse("private:signal", args=[team.pk, "backup", signal_value(team)]))
    return {
        "heartbeat_url": heartbeat,
        "heartbeat_interval": settings.INSTANCE_HEARTBEAT_INTERVAL,
        "shutdown_url": heartbeat.replace("/signals/backup/", "/signals/shutdown/"),
    }


def receive_signal(team_id: int, signal: str, value: str, report: dict, client: Client) -> Team:
    """Verify a signal URL and record what it says; a refusal is audited (HMAC of the value only) and raised
    as ExchangeRefused."""
    audit = {"token": value, "signal": signal}
    try:
        claims = read_team_token(value, salt=SIGNAL_SALT)
        if claims.team_id != team_id:
            raise InvalidToken("wrong_team")
        team = check_claims(claims, Team.objects.filter(pk=team_id).first())
    except InvalidToken as invalid:
        # Only a value we signed for this team (a revoked one) is the team's; anything else merely names it:
        # recorded as a claim, shown on the team's timeline as unverified, never charged to it.
        audit.update(team=invalid.team, claimed_team_id=team_id)
        if ratelimit.address_is_over_limit(client.ip):
            raise refuse(429, "too many invalid signal URLs from this address", Reason.ADDRESS_RATE_LIMITED,
                         client, retry_after=ratelimit.address_limit().seconds, **audit) from None
        raise refuse(403, INVALID_SIGNAL_MESSAGE, invalid.reason, client, **audit) from None
    except TeamDisabled as disabled:
        raise refuse(403, "team disabled", Reason.TEAM_DISABLED, client, team=disabled.team, **audit) from None
    SIGNAL_RECORDERS[signal](team, report)
    return team
