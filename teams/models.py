from django.core.validators import RegexValidator
from django.db import models

# A DNS label: the slug becomes the team's subdomain.
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_PATTERN,
    "Use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


class Team(models.Model):
    """A customer team. Its id never changes and names its storage prefix `team-<id>/`."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DISABLED = "disabled", "Disabled"

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Part of every token; bumping it revokes the team's current token at once.
    token_generation = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def storage_prefix(self) -> str:
        # The trailing slash keeps team-1 from matching team-10/.
        return f"team-{self.pk}/"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE
