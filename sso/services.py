"""Single sign-on to a team's instance (docs/sso.md): issuing a code at /sso/authorize, redeeming it for a grant on
the private API, re-validating a grant or a user, ending grants, pruning. Every refusal is audited (sso.audit)."""

import base64
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from importlib import import_module
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from credentials.audit import Client
from teams.models import Membership, Team
from teams.routing import team_url

from .audit import record_sso_event
from .models import AuthorizationCode, InstanceSession, SSOEvent

logger = logging.getLogger(__name__)
Kind = SSOEvent.Kind
Reason = SSOEvent.Reason

CODE_LIFETIME = timedelta(seconds=60)
CALLBACK_PATH = "-/sso/callback"
# docs/sso.md §1
TEAM_ID_SHAPE = re.compile(r"[1-9][0-9]{0,17}")
STATE_SHAPE = re.compile(r"[A-Za-z0-9._~-]{16,256}")
CODE_CHALLENGE_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")
# RFC 7636 §4.1
CODE_VERIFIER_SHAPE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
# secrets.token_urlsafe(32) is 43 characters; anything longer is no code of ours and is not even hashed.
CODE_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,128}")
GRANT_SHAPE = CODE_SHAPE
USER_ID_SHAPE = TEAM_ID_SHAPE
REDIRECT_URI_LIMIT = 512


def digest(secret: str) -> str:
    """What the database holds of a code or grant id (256 random bits: no key needed)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def callback_url(team: Team) -> str:
    """The one redirect URI a team's instance may ask for: its callback on its own host."""
    return team_url(team.slug) + CALLBACK_PATH


def session_model():
    """The control-plane sessions' model, as SESSION_ENGINE's store names it (Django's clearsessions does the same)."""
    return import_module(settings.SESSION_ENGINE).SessionStore.get_model_class()


def session_reference(session) -> str:
    """The control-plane session as its table names it (the row's key: with SESSION_ENGINE = "cloudctl.sessions" a
    digest of the cookie's value), through the store's documented `create_model_instance`, so it follows the
    engine; never the cookie's value itself."""
    return session.create_model_instance({}).session_key


def live_session(now):
    """A subquery: the control-plane session a code or grant references, while it has not expired."""
    return session_model().objects.filter(session_key=OuterRef("session_reference"), expire_date__gt=now)


class Refused(Exception):
    """A refusal, already audited. `error` and `description` are safe to show the caller."""

    def __init__(self, status: int, error: str, description: str = ""):
        super().__init__(description or error)
        self.status = status
        self.error = error
        self.description = description


# --- 1. Authorize ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthorizeRequest:
    team: Team
    redirect_uri: str
    state: str
    code_challenge: str


def read_authorize_request(params, client: Client, *, user=None) -> AuthorizeRequest:
    """The authorize request's parameters checked (`params`: the query's QueryDict); else Refused(400), audited.
    Nothing here is verified: the team it names is recorded as claimed only."""
    values = {name: params.getlist(name) for name in
              ("team", "redirect_uri", "state", "code_challenge", "code_challenge_method")}
    claimed = values["team"][0] if len(values["team"]) == 1 and TEAM_ID_SHAPE.fullmatch(values["team"][0]) else None
    audit = {"claimed_team_id": int(claimed) if claimed else None, "user": user}
    if problem := _malformed(values):
        record_sso_event(Kind.REFUSED, client, reason=Reason.BAD_REQUEST, **audit)
        raise Refused(400, "invalid_request", problem)
    team = Team.objects.filter(pk=int(claimed)).first()
    if team is None:
        record_sso_event(Kind.REFUSED, client, reason=Reason.UNKNOWN_TEAM, **audit)
        raise Refused(400, "invalid_request", "unknown team")
    redirect_uri = values["redirect_uri"][0]
    if not hmac.compare_digest(redirect_uri.encode(), callback_url(team).encode()):
        record_sso_event(Kind.REFUSED, client, reason=Reason.WRONG_REDIRECT_URI, **audit)
        raise Refused(400, "invalid_request", "redirect_uri is not this team's single sign-on callback")
    return AuthorizeRequest(team=team, redirect_uri=redirect_uri, state=values["state"][0],
                            code_challenge=values["code_challenge"][0])


def _malformed(values: dict[str, list[str]]) -> str:
    """What is wrong with the parameters, or "" (each must be given exactly once)."""
    for name, found in values.items():
        if len(found) != 1:
            return f"{name}: give it exactly once"
    if not TEAM_ID_SHAPE.fullmatch(values["team"][0]):
        return "team: the team's id, in digits"
    if len(values["redirect_uri"][0]) > REDIRECT_URI_LIMIT:
        return "redirect_uri: too long"
    if not STATE_SHAPE.fullmatch(values["state"][0]):
        return "state: 16-256 URL-safe characters"
    if not CODE_CHALLENGE_SHAPE.fullmatch(values["code_challenge"][0]):
        return "code_challenge: BASE64URL(SHA256(code_verifier)), 43 characters"
    if values["code_challenge_method"][0] != "S256":
        return "code_challenge_method: S256"
    return ""


def issue_code(authorize: AuthorizeRequest, user, session_reference: str, client: Client) -> str:
    """The URL to send a member's browser back to, with a new code; Refused(403) for anyone else, audited.
    `session_reference`: the signed-in control-plane session as its table names it (never the cookie's value)."""
    team = authorize.team
    audit = {"claimed_team_id": team.pk, "user": user}
    if not user.is_active:
        record_sso_event(Kind.REFUSED, client, reason=Reason.USER_DISABLED, **audit)
        raise Refused(403, "access_denied", "this account is disabled")
    if not team.is_active:
        record_sso_event(Kind.REFUSED, client, reason=Reason.TEAM_DISABLED, **audit)
        raise Refused(403, "access_denied", "this team is disabled")
    if not Membership.objects.filter(team=team, user=user).exists():
        record_sso_event(Kind.REFUSED, client, reason=Reason.NOT_A_MEMBER, **audit)
        raise Refused(403, "access_denied", "you are not a member of this team")
    code = secrets.token_urlsafe(32)
    now = timezone.now()
    AuthorizationCode.objects.create(
        code_digest=digest(code), team=team, user=user, redirect_uri=authorize.redirect_uri,
        code_challenge=authorize.code_challenge, session_reference=session_reference, created_at=now,
        expires_at=now + CODE_LIFETIME)
    record_sso_event(Kind.ISSUED, client, team=team, user=user, secret=code)
    return f"{authorize.redirect_uri}?{urlencode({'code': code, 'state': authorize.state})}"


# --- 2. Redeem ----------------------------------------------------------------------------------------------

def pkce_matches(verifier: str, challenge: str) -> bool:
    """RFC 7636 S256, compared in constant time."""
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return hmac.compare_digest(computed, challenge.encode())


def actor_of(membership: Membership) -> dict:
    user = membership.user
    return {"id": str(user.pk), "email": user.email, "role": membership.role}


def redeem_code(team: Team, code: str, code_verifier, redirect_uri, client: Client) -> dict:
    """Swap a code for its actor and a new grant (docs/sso.md §2); `team` is the verified caller. The first
    attempt burns the code whatever its outcome. Refused(400, "invalid_grant") otherwise, audited against the
    caller's team (the code's own team is only tied in through the code's fingerprint)."""
    now = timezone.now()
    code_digest = digest(code)
    with transaction.atomic():
        first_attempt = AuthorizationCode.objects.filter(code_digest=code_digest, used_at__isnull=True).update(
            used_at=now)
        issued = (AuthorizationCode.objects.select_related("user")
                  .annotate(session_alive=Exists(live_session(now))).filter(code_digest=code_digest).first())

    def refuse(reason: str, description: str, *, user=None) -> Refused:
        record_sso_event(Kind.REFUSED, client, reason=reason, team=team, user=user, secret=code)
        return Refused(400, "invalid_grant", description)

    if issued is None:
        raise refuse(Reason.UNKNOWN_CODE, "unknown code")
    if not first_attempt:
        raise refuse(Reason.CODE_USED, "code already used")
    if issued.expires_at <= now:
        raise refuse(Reason.CODE_EXPIRED, "code expired")
    if issued.team_id != team.pk:
        raise refuse(Reason.WRONG_TEAM, "code of another team")
    if not (isinstance(redirect_uri, str) and hmac.compare_digest(redirect_uri.encode(), issued.redirect_uri.encode())):
        raise refuse(Reason.REDIRECT_URI_MISMATCH, "redirect_uri differs from the authorize request's")
    if not (isinstance(code_verifier, str) and CODE_VERIFIER_SHAPE.fullmatch(code_verifier)
            and pkce_matches(code_verifier, issued.code_challenge)):
        raise refuse(Reason.BAD_VERIFIER, "missing or wrong code_verifier")
    user = issued.user
    if not issued.session_alive:
        raise refuse(Reason.SESSION_ENDED, "the control-plane session ended", user=user)
    try:
        membership = current_membership(team, user)
    except Refused as refused:
        raise refuse(refused.error, refused.error.replace("_", " "), user=user) from None
    grant = secrets.token_urlsafe(32)
    InstanceSession.objects.create(grant_digest=digest(grant), team=team, user=user,
                                   session_reference=issued.session_reference, created_at=now)
    record_sso_event(Kind.REDEEMED, client, team=team, user=user, secret=code)
    return {"actor": actor_of(membership), "session": grant, "revalidate_after": settings.SSO_REVALIDATE_SECONDS}


def current_membership(team: Team, user) -> Membership:
    """The user's membership of the team as it is now; Refused(403) with the reason (not audited here)."""
    if not user.is_active:
        raise Refused(403, Reason.USER_DISABLED.value)
    membership = Membership.objects.select_related("user").filter(team=team, user=user).first()
    if membership is None:
        raise Refused(403, Reason.NOT_A_MEMBER.value)
    return membership


# --- 3. Re-validate -------------------------------------------------------------------------------------

def revalidate(team: Team, *, grant: str | None = None, user_id: int | None = None, client: Client) -> dict:
    """The actor a grant (a browser) or a user (a Datasette API token) stands for now, on `team` (the verified
    caller); Refused(403, "session_ended" | "user_disabled" | "not_a_member") otherwise, audited."""
    if grant is not None:
        session = (InstanceSession.objects.select_related("user").filter(grant_digest=digest(grant), team=team)
                   .annotate(session_alive=Exists(live_session(timezone.now()))).first())
        user = session.user if session else None
        if session is None or session.ended_at is not None or not session.session_alive:
            if session is not None and session.ended_at is None:
                InstanceSession.objects.filter(pk=session.pk).update(ended_at=timezone.now())
            record_sso_event(Kind.REVALIDATION_REFUSED, client, reason=Reason.SESSION_ENDED, team=team, user=user,
                             secret=grant)
            raise Refused(403, Reason.SESSION_ENDED.value)
    else:
        user = get_user_model().objects.filter(pk=user_id).first()
        if user is None:
            record_sso_event(Kind.REVALIDATION_REFUSED, client, reason=Reason.NOT_A_MEMBER, team=team)
            raise Refused(403, Reason.NOT_A_MEMBER.value)
    try:
        membership = current_membership(team, user)
    except Refused as refused:
        record_sso_event(Kind.REVALIDATION_REFUSED, client, reason=refused.error, team=team, user=user,
                         secret=grant)
        raise
    return {"actor": actor_of(membership), "revalidate_after": settings.SSO_REVALIDATE_SECONDS}


# --- Ending and pruning ---------------------------------------------------------------------------------

def end_sessions(session_reference: str, *, actor) -> int:
    """End every grant issued from this control-plane session (its user signed out); returns how many.
    `actor`: who ended them (the user signing out), for the log."""
    ended = InstanceSession.objects.filter(session_reference=session_reference, ended_at__isnull=True).update(
        ended_at=timezone.now())
    if ended:
        logger.info("%s instance session(s) ended by %s", ended, actor)
    return ended


def prune_single_sign_on(now=None) -> int:
    """Delete expired codes, grants ended (or whose control-plane session is gone) more than
    CLOUDCTL_AUDIT_RETENTION_DAYS ago and audit rows older than that; returns how many rows were deleted."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.AUDIT_RETENTION_DAYS)
    InstanceSession.objects.filter(ended_at__isnull=True).exclude(Exists(live_session(now))).update(ended_at=now)
    return sum((
        AuthorizationCode.objects.filter(expires_at__lt=now).delete()[0],
        InstanceSession.objects.filter(ended_at__lt=cutoff).delete()[0],
        SSOEvent.objects.filter(created_at__lt=cutoff).delete()[0],
    ))
