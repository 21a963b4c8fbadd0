import hashlib

from django.conf import settings
from django.db import models

from teams.models import Membership, Team


class Invitation(models.Model):
    """An invitation to join a team with a role, sent by mail as a single-use link. Only the SHA-256 of the
    link's key is stored: a copy of the database accepts no invitation. Resending replaces the key (the old link
    dies) and the expiry."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    # Kept as typed, compared case-insensitively with the accepting account's verified addresses.
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Membership.Role.choices)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "-created_at"]

    def __str__(self) -> str:
        return f"{self.email} to {self.team.slug} ({self.role})"

    @staticmethod
    def hash_key(key: str) -> str:
        """What is stored of a link's key (256 random bits: a plain SHA-256 is enough, no salt or stretching)."""
        return hashlib.sha256(key.encode()).hexdigest()

    def is_pending(self, now) -> bool:
        return self.accepted_at is None and self.revoked_at is None and now < self.expires_at
