"""The audit trail of the private API: every issuance and every refusal, never a secret."""

import functools
import logging
from dataclasses import dataclass

from django.db import connection
from django.utils.crypto import salted_hmac

from teams.models import Team

from .broker import IssuedCredentials
from .models import CredentialEvent

logger = logging.getLogger("cloudctl.audit")

USER_AGENT_LIMIT = 256
FORMAT_LIMIT = 32


def storable(text: str, limit: int) -> str:
    """Caller-supplied text as every database can store it: PostgreSQL text fields refuse NUL characters."""
    return text.replace("\x00", "\N{REPLACEMENT CHARACTER}")[:limit]


@dataclass(frozen=True)
class Client:
    """Who called: the address and user agent, as recorded."""

    ip: str | None
    user_agent: str = ""


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


def record_refusal(
    reason: str, client: Client, *, team: Team | None = None, token: str | None = None, response_format: str = "",
    signal: str = "",
) -> CredentialEvent:
    """`token` is the presented token or signal value: only its HMAC is kept."""
    event = CredentialEvent.objects.create(
        kind=CredentialEvent.Kind.REFUSED, reason=reason, team=team, client_ip=client.ip,
        user_agent=storable(client.user_agent, USER_AGENT_LIMIT),
        response_format=storable(response_format, FORMAT_LIMIT),
        token_fingerprint=token_fingerprint(token), signal=signal,
    )
    logger.warning(
        "%s refused reason=%s team=%s ip=%s fingerprint=%s",
        f"{signal} signal" if signal else "credentials", reason, team.pk if team else "-", client.ip,
        event.token_fingerprint[:16] or "-",
    )
    return event
