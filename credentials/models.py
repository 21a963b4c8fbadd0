from django.db import models
from django.db.models import Q
from django.utils import timezone


class CredentialEvent(models.Model):
    """One row per exchange attempt on the private API (and per refused instance signal); never holds a secret.
    Throttled requests are the exception: one row per address, reason, team and signal a minute, counting them.

    Refused tokens are kept as an HMAC (`token_fingerprint`) so repeated attempts can be correlated
    without the token itself being recoverable. `team` is set only when the request verifiably came from the
    team (its token or signal value, signed by us, even if revoked); a team an unverified request merely named
    is `claimed_team_id`, so that nothing a stranger sends is ever charged to a team.
    """

    class Kind(models.TextChoices):
        ISSUED = "issued", "Issued"
        REFUSED = "refused", "Refused"
        # Read-only credentials the control plane minted for itself to read the team's replica (its restorable
        # window, restores, drills): not the team's request, so never counted against its rate limit.
        READ_ONLY = "readonly", "Issued read-only to the control plane"

    class Reason(models.TextChoices):
        MISSING_TOKEN = "missing_token", "No token"
        MALFORMED = "malformed", "Malformed token"
        BAD_SIGNATURE = "bad_signature", "Bad signature"
        BAD_PAYLOAD = "bad_payload", "Bad payload"
        UNKNOWN_TEAM = "unknown_team", "Unknown team"
        REVOKED = "revoked", "Revoked token (old generation)"
        TEAM_DISABLED = "team_disabled", "Team disabled"
        TEAM_RATE_LIMITED = "team_rate_limited", "Team over its rate limit"
        ADDRESS_RATE_LIMITED = "address_rate_limited", "Address sent too many bad tokens"
        STS_UNAVAILABLE = "sts_unavailable", "STS unavailable"
        METHOD_NOT_ALLOWED = "method_not_allowed", "Method not allowed"
        BODY_TOO_LARGE = "body_too_large", "Body too large"
        BAD_REQUEST = "bad_request", "Bad request"
        WRONG_TEAM = "wrong_team", "Signal URL of another team"
        STALE_BOOT = "stale_boot", "Shutdown URL of an earlier boot"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    team = models.ForeignKey(
        "teams.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="credential_events"
    )
    created_at = models.DateTimeField(default=timezone.now)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    response_format = models.CharField(max_length=32, blank=True)
    access_key_id = models.CharField(max_length=128, blank=True)
    session_name = models.CharField(max_length=64, blank=True)
    expiration = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=24, choices=Reason.choices, blank=True)
    token_fingerprint = models.CharField(max_length=64, blank=True)
    # The instance signal refused (backup, shutdown), or the single sign-on endpoint whose team token was refused
    # (sso_token, sso_actor: sso.views); empty for credential exchanges.
    signal = models.CharField(max_length=16, blank=True)
    # The team an unverified token or signal URL named (not a foreign key: it may name no team at all).
    claimed_team_id = models.PositiveBigIntegerField(null=True, blank=True)
    # Who had the control plane mint read-only credentials (`READ_ONLY` rows): a staff user or a process.
    actor = models.CharField(max_length=150, blank=True)
    # How many requests the row stands for: above 1 only on a throttled row (credentials.audit.THROTTLED).
    request_count = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["client_ip", "reason", "created_at"]),
            # The team rate limit counts issuances only (credentials.ratelimit.team_with_recent_requests).
            models.Index(fields=["team", "created_at"], condition=Q(kind="issued"), name="credentials_issued_idx"),
            models.Index(fields=["claimed_team_id", "created_at"], condition=Q(claimed_team_id__isnull=False),
                         name="credentials_claimed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reason or self.access_key_id} team={self.team_id}"


class CredentialEventTotal(models.Model):
    """Requests per (kind, reason, signal) in the audit rows up to the watermark: the metrics' counters, which
    pruning never takes back, and which a scrape reads instead of the whole audit table (credentials.retention)."""

    kind = models.CharField(max_length=8)
    reason = models.CharField(max_length=24, blank=True)
    signal = models.CharField(max_length=16, blank=True)
    requests = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "reason", "signal"], name="credentials_total_key")]


class CredentialEventWatermark(models.Model):
    """One row: the id of the last audit row counted in CredentialEventTotal."""

    last_event_id = models.BigIntegerField(default=0)
