from django.core.exceptions import ValidationError
from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from cloudctl.logs import RedactedTextField

from .routing import team_url

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
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    # Where the team's instance runs (a Fly region code); chosen from CLOUDCTL_REGIONS at creation.
    region = models.CharField(max_length=32, blank=True)
    # Part of every token; bumping it revokes the team's current token at once.
    token_generation = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        # Besides the default view/add/change/delete: what the dashboard and the admin let staff do to a team
        # (each operator action in instances.actions names one of them).
        permissions = [
            ("operate_instance", "Can provision, start, stop and restart a team's instance"),
            ("rotate_token", "Can rotate a team's token"),
            ("destroy_instance", "Can destroy a team's instance (its backups are kept)"),
            ("deploy_image", "Can deploy an image to teams (start, resume, redeploy)"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def storage_prefix(self) -> str:
        # The trailing slash keeps team-1 from matching team-10/.
        return f"team-{self.pk}/"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def subdomain_url(self) -> str:
        """The team's public URL: the router's (see teams/routing.py)."""
        return team_url(self.slug)


class TeamEvent(models.Model):
    """The team's timeline: provisioning steps, failures with their reason, crashes, restarts. Written only by
    `teams.timeline.record`; code reads `kind`, `actor` and `data`, never the message (shown to people)."""

    class Kind(models.TextChoices):
        # Provisioning (instances/provisioning.py): one kind per backend step, so each step reads as itself.
        PROVISIONING = "provisioning", "Provisioning"
        STEP_APP = "step:app", "Step done: app"
        STEP_SECRET = "step:secret", "Step done: secret"
        STEP_VOLUME = "step:volume", "Step done: volume"
        STEP_LAUNCH = "step:launch", "Step done: launch id"
        STEP_MACHINE = "step:machine", "Step done: machine"
        STEP_STARTED = "step:started", "Step done: started"
        STEP_HEALTHY = "step:healthy", "Step done: healthy"
        RUNNING = "running", "Running"
        PROVISIONING_FAILED = "provisioning_failed", "Provisioning failed"
        # Operators (instances/services.py and lifecycle.py, teams/services.py).
        ACTION_PROVISION = "action:provision", "Provision requested"
        ACTION_START = "action:start", "Start requested"
        ACTION_STOP = "action:stop", "Stop requested"
        ACTION_RESTART = "action:restart", "Restart requested"
        ACTION_DESTROY = "action:destroy", "Destroy requested"
        STOPPED = "stopped", "Stopped"
        RESTARTING = "restarting", "Restarting"
        DESTROYED = "destroyed", "Destroyed"
        TOKEN_ROTATED = "token_rotated", "Token rotated"
        # The reconciler (instances/reconcile.py).
        CRASHED = "crashed", "Crashed"
        CRASH_LOOP = "crash_loop", "Crash loop"
        EXITED = "exited", "Exited"
        RECONCILED = "reconciled", "Reconciled"
        # Instance signals and the backup watch (backups/services.py).
        BACKUP_STALE = "backup_stale", "Backups stale"
        BACKUP_RESUMED = "backup_resumed", "Backups resumed"
        BACKUP_WATCH_RESUMED = "backup_watch_resumed", "Backup watch resumed"
        SCALED_TO_ZERO = "scaled_to_zero", "Scaled to zero"
        # Restore drills (backups/drills.py): the first failure of an episode, and the pass that ends it.
        RESTORE_DRILL_FAILED = "restore_drill_failed", "Restore drill failed"
        RESTORE_DRILL_PASSED = "restore_drill_passed", "Restore drill passed again"
        # Point-in-time restores (backups/restore.py).
        RESTORE_REQUESTED = "restore:requested", "Restore requested"
        RESTORE_PREVIEW = "restore:preview", "Restore preview running"
        RESTORE_SWAPPED = "restore:swapped", "Restore swapped in"
        RESTORE_SWAPPED_BACK = "restore:swapped_back", "Restore swapped back"
        RESTORE_CANCELLED = "restore:cancelled", "Restore cancelled"
        RESTORE_FAILED = "restore:failed", "Restore failed"
        # Deploys (deploys/runner.py).
        DEPLOYED = "deployed", "Deployed"
        DEPLOY_FAILED = "deploy_failed", "Deploy failed"
        DEPLOY_SKIPPED = "deploy_skipped", "Deploy skipped"
        DEPLOY_TENANT_FAULT = "deploy_tenant_fault", "Deploy failed by the tenant"
        ROLLED_BACK = "rolled_back", "Rolled back"
        ROLLBACK_FAILED = "rollback_failed", "Rollback failed"
        # Members (members/services.py): who may reach the team's instance, and as what.
        MEMBER_ADDED = "member:added", "Member added"
        MEMBER_ROLE_CHANGED = "member:role_changed", "Member's role changed"
        MEMBER_REMOVED = "member:removed", "Member removed"
        OWNERSHIP_TRANSFERRED = "member:ownership_transferred", "Ownership transferred"
        INVITATION_SENT = "invitation:sent", "Invitation sent"
        INVITATION_RESENT = "invitation:resent", "Invitation resent"
        INVITATION_REVOKED = "invitation:revoked", "Invitation revoked"
        INVITATION_ACCEPTED = "invitation:accepted", "Invitation accepted"
        # A row from before the kinds were typed whose kind no code writes (migration 0011 keeps it in `data`).
        OTHER = "other", "Other"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=40, choices=Kind.choices)
    # Who made the change: a username, or the process ("manage.py deploy", "task provision_team", "instance").
    actor = models.CharField(max_length=150)
    message = RedactedTextField()
    # The facts behind the message, for code to read (a step's name, a deployment's id, a crash count).
    data = models.JSONField(default=dict, blank=True)
    is_error = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.team.slug}: {self.kind}"


class Membership(models.Model):
    """A user's place in a team: what they may do on its instance (instance/plugins/team_auth.py maps the role to
    Datasette permissions) and on its members page. A team always keeps at least one owner (members/services.py)."""

    class Role(models.TextChoices):
        # Most to least: each role may do everything the ones below it may.
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="team_memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "user"]
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_user_and_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team.slug} ({self.role})"

    def has_role_at_least(self, role: "Membership.Role | str") -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[Membership.Role(role)]


# How much each role may do (more is higher): `Membership.has_role_at_least` compares them.
ROLE_RANK = {Membership.Role.VIEWER: 0, Membership.Role.MEMBER: 1, Membership.Role.ADMIN: 2,
             Membership.Role.OWNER: 3}
