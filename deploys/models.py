"""A rollout of one image to many teams (`Deployment`) and each team's part in it (`DeploymentTarget`).

Both tables were created by the teams app (migration teams/0006) and keep their names: deploys/0001 moved only
Django's record of which app owns them."""

from django.db import models

from cloudctl.logs import RedactedTextField
from teams.models import Team


class Deployment(models.Model):
    """A rollout of one image to many teams: canary teams first, then waves. Only one is open at a time."""

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        INTERRUPTED = "interrupted", "Interrupted (resume it)"
        ROLLING_BACK = "rolling_back", "Rolling back"
        SUCCEEDED = "succeeded", "Succeeded"
        COMPLETED_WITH_FAILURES = "completed_with_failures", "Completed with failures"
        HALTED = "halted", "Halted and rolled back"

    image = models.CharField(max_length=300)
    # A deployment to every team also sets the image new teams start on.
    all_teams = models.BooleanField(default=False)
    state = models.CharField(max_length=24, choices=State.choices, default=State.RUNNING)
    # True while open, NULL after: the unique constraint then allows one open deployment and any number of closed.
    is_open = models.BooleanField(null=True, default=True)
    canary = models.PositiveIntegerField()
    concurrency = models.PositiveIntegerField()
    max_failures = models.PositiveIntegerField()
    requested_by = models.CharField(max_length=150, blank=True)
    message = RedactedTextField(blank=True)
    # The run executing it: a run that died (killed command, lost worker) can be taken over by `--resume`.
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "teams_deployment"  # created by the teams app, before deploys had its own
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["is_open"], condition=models.Q(is_open=True),
                                               name="one_open_deployment")]

    def __str__(self) -> str:
        return f"deployment {self.pk} of {self.image} ({self.state})"


class DeploymentTarget(models.Model):
    """One team in a deployment: its wave, the image it ran before, and how far its update got."""

    class Step(models.TextChoices):
        PENDING = "pending", "Pending"
        UPDATING = "updating", "Updating"
        UPDATED = "updated", "Updated"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        ROLLING_BACK = "rolling_back", "Rolling back"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ROLLBACK_FAILED = "rollback_failed", "Rollback failed"
        # Failed on the new image and on its own previous one too: the tenant's doing, never counted as a failure.
        TENANT_FAULT = "tenant_fault", "Tenant fault"

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="targets")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="deployment_targets")
    wave = models.PositiveIntegerField()  # 0 is the canary
    step = models.CharField(max_length=16, choices=Step.choices, default=Step.PENDING)
    # Read from the backend just before the update: what a rollback restores.
    previous_image = models.CharField(max_length=300, blank=True)
    was_running = models.BooleanField(null=True)
    attempts = models.PositiveIntegerField(default=0)
    error = RedactedTextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "teams_deploymenttarget"
        ordering = ["wave", "id"]
        constraints = [models.UniqueConstraint(fields=["deployment", "team"], name="one_target_per_team")]
        indexes = [models.Index(fields=["deployment", "step"])]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.step}"
