from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

# A DNS label: the slug becomes the team's subdomain.
SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_PATTERN,
    "Use 1-63 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


# Subdomains the service itself uses.
RESERVED_SLUGS = frozenset({"www", "admin", "api", "app", "private", "static", "cloudctl", "mail", "status"})


def validate_not_reserved(slug: str) -> None:
    if slug in RESERVED_SLUGS:
        raise ValidationError(f"'{slug}' is reserved.")


class Team(models.Model):
    """A customer team. Its id never changes and names its storage prefix `team-<id>/`."""

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        DISABLED = "disabled", "Disabled"

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator, validate_not_reserved])
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


class Instance(models.Model):
    """A team's running Datasette: its resources on a machine backend and what provisioning has done.

    `resources` holds the backend's ids (directory, port, pid; app, volume, machine) and is saved after every
    step, so a provisioning run killed at any point is finished by the next one.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        RUNNING = "running", "Running"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"
        DESTROYING = "destroying", "Destroying"
        DESTROYED = "destroyed", "Destroyed"

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="instance")
    # The backend holding the resources, fixed at creation: changing the setting later must not orphan them.
    backend = models.CharField(max_length=200)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    # What the team should be: provisioning and supervision converge on it.
    desired_state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    image = models.CharField(max_length=300, blank=True)
    url = models.CharField(max_length=300, blank=True)
    resources = models.JSONField(default=dict, blank=True)
    completed_steps = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    # A lease so that two provisioning runs for one team never overlap (a double click, a retried task).
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.team.slug} ({self.state})"


class TeamEvent(models.Model):
    """The team's timeline: provisioning steps, failures with their reason, crashes, restarts."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=40)
    message = models.TextField()
    is_error = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.kind}"


class MachineLease(models.Model):
    """A Fly lease cloudctl holds, with its nonce: an interrupted run's lease can then be released by
    `reconcile` instead of blocking every later operation until it expires."""

    app = models.CharField(max_length=100)
    machine_id = models.CharField(max_length=64)
    nonce = models.CharField(max_length=128)
    holder = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "machine_id"], name="one_lease_per_machine")]

    def __str__(self) -> str:
        return f"{self.app}/{self.machine_id} held by {self.holder}"
