"""The audit trail of the private API: every issuance and every refusal, never a secret."""

import functools
import ipaddress
import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_ipv46_address
from django.db import connection
from django.db.models import F, Subquery
from django.utils import timezone
from django.utils.crypto import salted_hmac

from teams.models import Team

from .broker import IssuedCredentials
from .models import CredentialEvent

logger = logging.getLogger("cloudctl.audit")

USER_AGENT_LIMIT = 256
FORMAT_LIMIT = 32
ACTOR_LIMIT = 150


def storable(text: str, limit: int) -> str:
    """Caller-supplied text as every database can store it: PostgreSQL text fields refuse NUL characters."""
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}")[:limit]


@dataclass(frozen=True)
class Client:
    """Who called: the address and user agent, as recorded. `ip` is None when the address cannot be told: the
    address limit counts those requests together, never lets them through uncounted."""

    ip: str | None
    user_agent: str = ""


def _valid_ip(text: str | None) -> str | None:
    try:
        validate_ipv46_address(text or "")
    except ValidationError:
        return None
    return text


@functools.cache
def _networks(cidrs: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    # strict=False: "10.0.0.1/8" means 10.0.0.0/8; the system check refuses what does not parse at all.
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


def is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # what Django's validator accepts and ipaddress does not (an IPv6 zone, say): no proxy
        return False
    return any(ip in network for network in _networks(tuple(settings.TRUSTED_PROXIES)))


def client_address(connecting: str | None, forwarded: str | None) -> str | None:
    """The caller's address: the proxy header's (`forwarded`) only when the connecting address is one of
    CLOUDCTL_TRUSTED_PROXIES and the header holds one valid address; otherwise the connecting address.
    Anyone else could write any address into the header and so spread bad tokens over addresses of their choice."""
    connecting = _valid_ip(connecting)
    if forwarded is not None and connecting is not None and is_trusted_proxy(connecting):
        return _valid_ip(forwarded.strip()) or connecting
    return connecting


def token_fingerprint(token: str | None) -> str:
    """An HMAC of a presented token: correlates repeated attempts, reveals nothing."""
    if not token:
        return ""
    return salted_hmac("cloudctl.audit.token", token, algorithm="sha256").hexdigest()


def record_issuance(team: Team, client: Client, response_format: str, issued: IssuedCredentials) -> CredentialEvent:
    event = CredentialEvent(
        kind=CredentialEvent.Kind.ISSUED, team=team, client_ip=client.ip,
        user_agent=storable(client.user_agent, USER_AGENT_LIMIT), response_format=response_format,
        access_key_id=issued.access_key_id, session_name=issued.session_name, expiration=issued.expiration,
    )
    _insert(event)
    logger.info(
        "credentials issued team=%s key_id=%s expires=%s ip=%s format=%s",
        team.pk, issued.access_key_id, issued.expiration.isoformat(), client.ip, response_format,
    )
    return event


def record_read_only_issuance(team: Team, issued: IssuedCredentials, *, actor: str) -> CredentialEvent:
    """The control plane minted read-only credentials for itself: who asked, the key id, never a secret."""
    event = CredentialEvent(
        kind=CredentialEvent.Kind.READ_ONLY, team=team, actor=storable(actor, ACTOR_LIMIT),
        access_key_id=issued.access_key_id, session_name=issued.session_name, expiration=issued.expiration,
    )
    _insert(event)
    logger.info("read-only credentials issued team=%s key_id=%s expires=%s actor=%s",
                team.pk, issued.access_key_id, issued.expiration.isoformat(), event.actor)
    return event


def _insert(event: CredentialEvent) -> None:
    """One INSERT of a new audit row, values prepared by the fields themselves, without `save()`'s machinery:
    it is on every exchange's path, where it costs half as much CPU. (No signal listens to audit rows.)"""
    fields, sql = _insert_statement()
    with connection.cursor() as cursor:
        cursor.execute(sql, [field.get_db_prep_save(field.pre_save(event, add=True), connection) for field in fields])


@functools.cache
def _insert_statement():
    fields = [field for field in CredentialEvent._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    table = connection.ops.quote_name(CredentialEvent._meta.db_table)
    return fields, f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"


# Refusals of requests over a rate limit: the first of a minute gets a row (and a log line), the rest only add
# to its `request_count`, so a flood costs neither rows nor log lines.
THROTTLED = {CredentialEvent.Reason.ADDRESS_RATE_LIMITED, CredentialEvent.Reason.TEAM_RATE_LIMITED}


def record_refusal(
    reason: str, client: Client, *, team: Team | None = None, claimed_team_id: int | None = None,
    token: str | None = None, response_format: str = "", signal: str = "",
) -> None:
    """`token` is the presented token or signal value: only its HMAC is kept. `team` only when the request
    verifiably came from it; `claimed_team_id` when it merely named it (never counted against the team)."""
    if reason in THROTTLED and _count_throttled(reason, client, team=team, signal=signal):
        return
    event = CredentialEvent.objects.create(
        kind=CredentialEvent.Kind.REFUSED, reason=reason, team=team, client_ip=client.ip,
        # A throttled row stands for a minute of requests, each naming whatever it liked: it claims no team.
        claimed_team_id=None if team or reason in THROTTLED else claimed_team_id,
        user_agent=storable(client.user_agent, USER_AGENT_LIMIT),
        response_format=storable(response_format, FORMAT_LIMIT),
        token_fingerprint=token_fingerprint(token), signal=signal,
    )
    logger.warning(
        "%s refused reason=%s team=%s claimed=%s ip=%s fingerprint=%s%s",
        f"{signal} signal" if signal else "credentials", reason, team.pk if team else "-",
        event.claimed_team_id or "-", client.ip, event.token_fingerprint[:16] or "-",
        " (more this minute are counted on this row, not logged)" if reason in THROTTLED else "",
    )


def _count_throttled(reason: str, client: Client, *, team: Team | None, signal: str) -> bool:
    """Add one to this minute's row for the address, reason, team and signal; False when there is none yet.
    (Two first requests racing may both insert a row: the totals still count each request once.)"""
    minute_rows = CredentialEvent.objects.filter(
        kind=CredentialEvent.Kind.REFUSED, reason=reason, client_ip=client.ip, team=team, signal=signal,
        created_at__gte=timezone.now().replace(second=0, microsecond=0))
    return bool(CredentialEvent.objects.filter(pk=Subquery(minute_rows.values("pk")[:1])).update(
        request_count=F("request_count") + 1))
