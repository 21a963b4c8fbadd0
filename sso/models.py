"""The single sign-on's state (docs/sso.md): codes and grants stored only as SHA-256 digests, and the audit trail,
which keeps an HMAC of a code or grant id and never the value itself."""

from django.conf import settings
from django.db import models
from django.utils import timezone

# A SHA-256 in hex: what the database holds of a code or a grant id. Both are 256 random bits, so an unkeyed
# digest is as good as a keyed one and survives a SECRET_KEY rotation.
DIGEST_LENGTH = 64
# The control-plane session a code was issued from, as the session table itself names it (its primary key: with
# SESSION_ENGINE = "cloudctl.sessions", a digest of the cookie's value, never the value).
SESSION_REFERENCE_LENGTH = 40


class AuthorizationCode(models.Model):
    """A code handed to the browser by /sso/authorize, redeemed once by the team's instance within 60 seconds."""

    code_digest = models.CharField(max_length=DIGEST_LENGTH, unique=True)
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="sso_codes")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_codes")
    redirect_uri = models.CharField(max_length=512)
    code_challenge = models.CharField(max_length=43)
    session_reference = models.CharField(max_length=SESSION_REFERENCE_LENGTH)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)
    # Set by the first redemption attempt, successful or not: a code is never tried twice.
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"code for {self.user_id} in team {self.team_id}"


class InstanceSession(models.Model):
    """What a redeemed code becomes: the session a team's instance keeps for a browser (docs/sso.md §2), good while
    the control-plane session it came from lives and nobody ended it."""

    grant_digest = models.CharField(max_length=DIGEST_LENGTH, unique=True)
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="sso_sessions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_sessions")
    session_reference = models.CharField(max_length=SESSION_REFERENCE_LENGTH, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"session of {self.user_id} on team {self.team_id}"


class SSOEvent(models.Model):
    """One row per code issued or redeemed and per refusal (authorize, redeem, re-validate).

    `team` is set only for what the team verifiably did or got: the private API called with its token, a code
    issued for it. Whatever team a refused authorize request named (anyone can write any team into a URL) is
    `claimed_team_id`. A code of team A presented with team B's token is recorded against B (the caller), never
    A: the code's `fingerprint` ties it to A's issuance row without charging A with anything."""

    class Kind(models.TextChoices):
        ISSUED = "issued", "Code issued"
        REDEEMED = "redeemed", "Code redeemed"
        REFUSED = "refused", "Refused"
        REVALIDATION_REFUSED = "revalidation_refused", "Re-validation refused"

    class Reason(models.TextChoices):
        BAD_REQUEST = "bad_request", "Malformed request"
        UNKNOWN_TEAM = "unknown_team", "Unknown team"
        WRONG_REDIRECT_URI = "wrong_redirect_uri", "Redirect URI not the team's"
        NOT_A_MEMBER = "not_a_member", "Not a member"
        TEAM_DISABLED = "team_disabled", "Team disabled"
        USER_DISABLED = "user_disabled", "User disabled"
        UNKNOWN_CODE = "unknown_code", "Unknown code"
        CODE_USED = "code_used", "Code already used"
        CODE_EXPIRED = "code_expired", "Code expired"
        WRONG_TEAM = "wrong_team", "Code of another team"
        REDIRECT_URI_MISMATCH = "redirect_uri_mismatch", "Redirect URI differs from the authorize request's"
        BAD_VERIFIER = "bad_verifier", "Missing or wrong PKCE verifier"
        SESSION_ENDED = "session_ended", "Control-plane session ended"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    reason = models.CharField(max_length=24, choices=Reason.choices, blank=True)
    team = models.ForeignKey("teams.Team", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="sso_events")
    claimed_team_id = models.PositiveBigIntegerField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="sso_events")
    # An HMAC of the code or grant id concerned (sso.audit.fingerprint): correlates rows, reveals nothing.
    fingerprint = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.reason} team={self.team_id}"
