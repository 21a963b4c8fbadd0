"""What the dashboard shows about the teams' wildcard certificate, as last seen on Fly (no Fly call on a page view).

One row per hostname the control plane asked Fly for (`*.CLOUDCTL_TEAMS_DOMAIN` on the router app), written only
by `domains.services` each time it reads Fly: `manage.py provision_domain`, the periodic check.
"""

from django.db import models


class Certificate(models.Model):
    # Fly's statuses (flyapi.Certificate.status) and ours for a hostname Fly no longer has.
    ACTIVE = "active"
    MISSING = "missing"

    hostname = models.CharField(max_length=253, unique=True)
    app = models.CharField(max_length=63, help_text="The Fly app holding it: the router's.")
    status = models.CharField(max_length=40, help_text="Fly's: active, pending_validation, pending_ownership; "
                                                       "or missing (no longer on the app).")
    dns_records = models.JSONField(default=list, help_text="The records to create, [{type, name, value}], the "
                                                           "ACME challenge first.")
    validation_errors = models.JSONField(default=list, help_text="Fly's, [{code, message, remediation}].")
    expires_at = models.DateTimeField(null=True, blank=True)
    requested_at = models.DateTimeField(auto_now_add=True)
    requested_by = models.CharField(max_length=150)
    checked_at = models.DateTimeField(null=True, blank=True)
    checked_by = models.CharField(max_length=150, blank=True)
    check_failure = models.TextField(blank=True, help_text="Why the last check could not read Fly (empty when it could).")

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status == self.ACTIVE
