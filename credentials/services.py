"""The credential exchange: token in, confined STS credentials out, every step audited. And the instance
signals: a signed URL in, the team's backup or scale-to-zero state recorded."""

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.urls import reverse

from backups.selectors import is_current_boot
from backups.services import (
    BadReport, record_backup_heartbeat, record_boot, record_fingerprint, record_scale_to_zero,
)
from teams.models import Team
from teams.permissions import VIEW_FLEET, Actor, authorize
from teams.tokens import (
    BOOT_SHAPE, SHUTDOWN_SALT, SIGNAL_SALT, InvalidToken, TeamDisabled, check_claims, read_team_token, shutdown_value,
    signal_value, verify_team_token,
)

from . import ratelimit
from .audit import Client, record_issuance, record_read_only_issuance, record_refusal
from .broker import UNAVAILABLE_MESSAGE, BrokerUnavailable, IssuedCredentials, assume_team_role
from .formats import RENDERERS
from .models import CredentialEvent

logger = logging.getLogger(__name__)
# The actor on a timeline event the team's own instance caused (a credential exchange, a signal): what it reports
# went through its token or a signed URL, so it is the instance speaking, whoever runs code in it.
INSTANCE_ACTOR = "instance"
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
    boot: str | None = None


def refuse(status: int, message: str, reason: str, client: Client, *, retry_after: int | None = None,
           **audit) -> ExchangeRefused:
    """Record a refusal and build the exception to raise."""
    record_refusal(reason, client, **audit)
    return ExchangeRefused(status, message, retry_after=retry_after)


def token_refusal(error: InvalidToken | TeamDisabled, client: Client, audit: dict) -> ExchangeRefused:
    """Record why a team token was refused and build the refusal: 403 for a disabled team, 401 for any other bad
    token (one message for all), 429 once the address has sent too many."""
    if isinstance(error, TeamDisabled):
        return refuse(403, "team disabled", Reason.TEAM_DISABLED, client, team=error.team, **audit)
    audit = {**audit, "team": error.team, "claimed_team_id": error.claimed_team_id}
    if ratelimit.address_is_over_limit(client.ip):
        return refuse(429, "too many invalid tokens from this address", Reason.ADDRESS_RATE_LIMITED, client,
                      retry_after=ratelimit.address_limit().seconds, **audit)
    return refuse(401, INVALID_TOKEN_MESSAGE, error.reason, client, **audit)


def authenticate_instance(token: str | None, client: Client, *, endpoint: str) -> Team:
    """The active team whose current token `token` is, checked as the credential exchange checks it (signature,
    current generation, team active); else ExchangeRefused, recorded in the private API's audit trail with
    `endpoint` in its `signal` column (so bad tokens count against the address limit wherever they are sent)."""
    audit = {"token": token, "signal": endpoint}
    if not token:
        raise refuse(401, "missing token", Reason.MISSING_TOKEN, client, **audit)
    try:
        return verify_team_token(token)
    except (InvalidToken, TeamDisabled) as error:
        raise token_refusal(error, client, audit) from None


def exchange_token(token: str | None, response_format: str, client: Client, *, boot: str | None = None) -> Exchange:
    """Swap a team token for STS credentials confined to the team's prefix; raise ExchangeRefused.

    `boot` is the instance's boot id (the entrypoint's, sent again by every renewal of that boot): recorded as
    the team's current boot, and the only one whose shutdown URL is accepted."""
    audit = {"token": token, "response_format": response_format}
    if response_format not in RENDERERS:
        raise refuse(400, f"unknown format; use one of: {', '.join(RENDERERS)}", Reason.BAD_REQUEST, client, **audit)
    if boot is not None and not BOOT_SHAPE.fullmatch(boot):
        raise refuse(400, "malformed boot id: 16-64 characters of A-Z, a-z, 0-9, - and _", Reason.BAD_REQUEST,
                     client, **audit)
    if not token:
        raise refuse(401, "missing token", Reason.MISSING_TOKEN, client, **audit)
    try:
        claims = read_team_token(token)
        team, recent_requests, recorded_boot = ratelimit.team_with_recent_requests(claims.team_id)
        team = check_claims(claims, team)
    except (InvalidToken, TeamDisabled) as error:
        raise token_refusal(error, client, audit) from None
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
    if boot is not None and not hmac.compare_digest(boot.encode(), (recorded_boot or "").encode()):
        record_boot(team, boot, actor=INSTANCE_ACTOR)  # a new boot: a renewal of the recorded one writes nothing
    return Exchange(team=team, credentials=issued, boot=boot)


def mint_read_only_credentials(team: Team, *, actor: Actor) -> IssuedCredentials:
    """Credentials for the control plane itself to list and get under the team's prefix (its replica's
    restorable window, restores, drills), never to write or delete there; audited like an exchange (key id, who
    asked, never a secret), and withheld when they cannot be recorded. They never leave the control plane, so
    seeing the fleet is enough to cause them. Raises BrokerUnavailable, PermissionDenied."""
    requested_by = authorize(actor, VIEW_FLEET)
    issued = assume_team_role(team, read_only=True)
    try:
        record_read_only_issuance(team, issued, actor=requested_by)
    except DatabaseError:
        logger.exception("could not record a read-only issuance for team %s; credentials withheld", team.pk)
        raise BrokerUnavailable(UNAVAILABLE_MESSAGE) from None
    return issued


def render_credentials(exchange: Exchange, response_format: str, absolute_url: Callable[[str], str]) -> dict:
    """The credentials in the requested contract, plus the team's signal URLs under `Signals` (every client
    of these contracts ignores keys it does not know)."""
    return {**RENDERERS[response_format](exchange.credentials),
            "Signals": signal_urls(exchange.team, absolute_url, boot=exchange.boot)}


# --- instance signals --------------------------------------------------------------------------------------

SIGNAL_RECORDERS = {
    # Litestream's heartbeat-url
    "backup": lambda team, report: record_backup_heartbeat(team, actor=INSTANCE_ACTOR),
    # datasette-scale-to-zero's shutdown_url
    "shutdown": lambda team, report: record_scale_to_zero(team, report, actor=INSTANCE_ACTOR),
    # instance/entrypoint.py's fingerprint reporter
    "fingerprint": lambda team, report: record_fingerprint(team, report, actor=INSTANCE_ACTOR),
}
# The fingerprint URL carries the heartbeat's value: both only say what the team's own backups hold.
SIGNAL_SALTS = {"backup": SIGNAL_SALT, "shutdown": SHUTDOWN_SALT, "fingerprint": SIGNAL_SALT}
INVALID_SIGNAL_MESSAGE = "invalid signal URL"


def signal_urls(team: Team, absolute_url: Callable[[str], str], *, boot: str | None = None) -> dict:
    """The URLs the instance configures, on the address it reached us at. Each embeds its own signed value bound
    to the team and its token generation (rotating the token revokes them); the shutdown URL's is also bound to
    the instance's boot, and is only handed to an exchange that names one.

    The heartbeat URL stays bound to the generation only, so a heartbeat from an earlier boot still counts. A
    heartbeat can only say the team's backups are fresh, which the team's own instance could claim anyway; bound
    to the boot, Litestream's URL (fixed in its config for the whole run) would stop counting whenever the
    recorded boot changed under it (an exchange by anything holding the team token), and the team would be
    flagged stale with backups running; and the instances already running when this shipped keep reporting. A
    shutdown, in contrast, switches the stale-backup watch off: an earlier boot's, replayed or leaked, must not."""
    value = signal_value(team)
    # One reverse() (it costs a tenth of a millisecond, on every exchange): the URLs differ in their last segments.
    heartbeat = absolute_url(reverse("private:signal", args=[team.pk, "backup", value]))
    signals = heartbeat[:-len(f"backup/{value}")]  # the team's signals URL, each signal's name and value after it
    urls = {"heartbeat_url": heartbeat, "heartbeat_interval": settings.INSTANCE_HEARTBEAT_INTERVAL,
            "fingerprint_url": f"{signals}fingerprint/{value}",
            "fingerprint_interval": settings.INSTANCE_FINGERPRINT_INTERVAL}
    if boot is not None:
        urls["shutdown_url"] = f"{signals}shutdown/{shutdown_value(team, boot)}"
    return urls


def receive_signal(team_id: int, signal: str, value: str, report: dict, client: Client) -> Team:
    """Verify a signal URL and record what it says; a refusal is audited (HMAC of the value only) and raised
    as ExchangeRefused."""
    audit = {"token": value, "signal": signal}
    try:
        claims = read_team_token(value, salt=SIGNAL_SALTS[signal])
        if claims.team_id != team_id:
            raise InvalidToken("wrong_team")
        team = check_claims(claims, Team.objects.filter(pk=team_id).first())
        if signal == "shutdown" and not is_current_boot(team, claims.boot):
            raise InvalidToken(Reason.STALE_BOOT, team=team)  # the instance restarted since: it changes nothing
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
    try:
        SIGNAL_RECORDERS[signal](team, report)
    except BadReport as bad:
        raise refuse(400, str(bad), Reason.BAD_REQUEST, client, team=team, **audit) from None
    return team
