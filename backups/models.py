"""A point-in-time restore of one team database, persisted as a state machine so every step can be resumed after
a crash (issue 16). Built so far: the request with its plan and the new volume (local backend); the restore into
it, the preview and the swap are not, and `backups.restore` says so instead of pretending."""

from django.db import models

from teams.models import Team


class Restore(models.Model):
    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        VOLUME_CREATED = "volume_created", "New volume created"
        RESTORED = "restored", "Restored and integrity-checked"
        PREVIEW_RUNNING = "preview_running", "Preview running"
        SWAPPED = "swapped", "Swapped in"
        SWAPPED_BACK = "swapped_back", "Swapped back"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (State.SWAPPED_BACK, State.CANCELLED)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="restores")
    database = models.CharField(max_length=210)
    # The point the plan chose when requested (window.RestorePoint), in Litestream's terms for `restore -txid`.
    target_txid = models.BigIntegerField()
    target_time = models.DateTimeField()
    # Where the backend put the new volume (its create_restore_volume), once created.
    volume = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.REQUESTED)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [("restore_database", "Can restore a team's database to a point in time")]

    def __str__(self) -> str:
        return f"restore {self.pk} of {self.team.slug}/{self.database} to txid {self.target_txid:016x}"
