"""A team's instance (`Instance`), the operators' requests to act on it (`TeamAction`) and the Fly leases held on
its machine (`MachineLease`).

The tables were created by the teams app and keep their names: instances/0001 moved only Django's record of
which app owns them."""

from django.db import models
from django.utils import timezone

from cloudctl.logs import RedactedTextField
from teams.models import Team


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
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING, db_index=True)
    # What the team should be: provisioning and the reconciler converge on it.
    desired_state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    image = models.CharField(max_length=300, blank=True, db_index=True)
    url = models.CharField(max_length=300, blank=True)
    resources = models.JSONField(default=dict, blank=True)
    completed_steps = models.JSONField(default=list, blank=True)
    last_error = RedactedTextField(blank=True)
    # A lease so that two provisioning runs for one team never overlap (a double click, a retried task).
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Instance signals (backups/services.py). The last heartbeat Litestream sent: every database synced recently.
    last_backup_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Since when heartbeats are due: set when the instance starts running or a heartbeat follows a scale to
    # zero; cleared when it stops or scales to zero, so a stopped instance is never flagged stale.
    backups_expected_since = models.DateTimeField(null=True, blank=True)
    # When the stale-backup alert was raised (one alert per episode); cleared when backups resume.
    backup_alerted_at = models.DateTimeField(null=True, blank=True)
    scaled_to_zero_at = models.DateTimeField(null=True, blank=True)
    scaled_to_zero_reason = models.CharField(max_length=200, blank=True)
    # The boot id the instance sent with its latest credential exchange (the entrypoint draws one at each start):
    # only the shutdown URL signed for this boot is accepted.
    boot_id = models.CharField(max_length=64, blank=True)

    class Meta:
        db_table = "teams_instance"  # created by the teams app, before instances had its own

    def __str__(self) -> str:
        return f"{self.team.slug} ({self.state})"

    @property
    def scaled_to_zero(self) -> bool:
        """It stopped because it said it would (scale to zero) and has not booted since: down until a request
        wakes it (the router, as Fly's proxy does). The database still names it running."""
        return (self.state == self.State.RUNNING and self.scaled_to_zero_at is not None
                and self.backups_expected_since is None)

    def save(self, *args, **kwargs):
        # Every path that changes `state` saves it; keeping `backups_expected_since` in step here means no
        # caller (provisioning, the reconciler, services) has to remember it.
        expected = self.backups_expected_since if self.state == self.State.RUNNING else None
        if self.state == self.State.RUNNING and expected is None:
            expected = timezone.now()
        if expected != self.backups_expected_since:
            self.backups_expected_since = expected
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = [*kwargs["update_fields"], "backups_expected_since"]
        super().save(*args, **kwargs)


class MachineLease(models.Model):
    """A Fly lease cloudctl holds, with its nonce: an interrupted run's lease can then be released by
    `reconcile` instead of blocking every later operation until it expires."""

    app = models.CharField(max_length=100)
    machine_id = models.CharField(max_length=64)
    nonce = models.CharField(max_length=128)
    holder = models.CharField(max_length=100)
    expires_at = models.DateTimeField()

    class Meta:
        db_table = "teams_machinelease"
        constraints = [models.UniqueConstraint(fields=["app", "machine_id"], name="one_lease_per_machine")]

    def __str__(self) -> str:
        return f"{self.app}/{self.machine_id} held by {self.holder}"


class TeamAction(models.Model):
    """An operator's request to act on a team (dashboard, admin): queued as a task, its progress recorded."""

    class Kind(models.TextChoices):
        PROVISION = "provision", "Provision"
        START = "start", "Start"
        STOP = "stop", "Stop"
        RESTART = "restart", "Restart"
        DESTROY = "destroy", "Destroy"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="actions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    requested_by = models.CharField(max_length=150, blank=True)
    error = RedactedTextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "teams_teamaction"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.kind} ({self.status})"

    @property
    def is_done(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)
