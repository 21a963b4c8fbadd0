"""The single sign-on's audit trail: every code issued or redeemed and every refusal, never a code, verifier or
grant id in clear (an HMAC of the code or grant id only)."""

import logging

from django.utils.crypto import salted_hmac

from credentials.audit import USER_AGENT_LIMIT, Client, storable
from teams.models import Team

from .models import SSOEvent

logger = logging.getLogger("cloudctl.audit")


def fingerprint(secret: str | None) -> str:
    """An HMAC of a code or grant id: ties a refusal to the issuance of the same code, reveals nothing."""
    if not secret:
        return ""
    return salted_hmac("cloudctl.sso.audit", secret, algorithm="sha256").hexdigest()


def record_sso_event(kind: str, client: Client, *, reason: str = "", team: Team | None = None,
                     claimed_team_id: int | None = None, user=None, secret: str | None = None) -> SSOEvent:
    """`team` only when verified (see SSOEvent); `secret` is the code or grant id concerned: only its HMAC is kept."""
    event = SSOEvent.objects.create(
        kind=kind, reason=reason, team=team, claimed_team_id=None if team else claimed_team_id, user=user,
        fingerprint=fingerprint(secret), client_ip=client.ip, user_agent=storable(client.user_agent, USER_AGENT_LIMIT))
    log = logger.info if kind in (SSOEvent.Kind.ISSUED, SSOEvent.Kind.REDEEMED) else logger.warning
    log("sso %s reason=%s team=%s claimed=%s user=%s ip=%s fingerprint=%s", kind, reason or "-",
        team.pk if team else "-", event.claimed_team_id or "-", user.pk if user else "-", client.ip,
        event.fingerprint[:16] or "-")
    return event
