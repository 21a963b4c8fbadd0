from django.db import models
from django.utils import timezone


class CredentialEvent(models.Model):
    """One row per exchange attempt on the private API (and per refused instance signal). Append-only; never holds a secret.

    Refused tokens are kept as an HMAC (`token_fingerprint`) so repeated attempts can be correlated
    without the token itself being recoverable.
    """

    class Kind(models.TextChoices):
        ISSUED = "issued", "Issued"
        REFUSED = "refused", "Refused"

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
    # The instance signal refused (backup, shutdown); empty for credential exchanges.
    signal = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["client_ip", "reason", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.reason or self.access_key_id} team={self.team_id}"
