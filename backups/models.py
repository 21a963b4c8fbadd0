"""What backups prove and what is done with them: restore drills, each a restore of a team's latest backup in a
scratch directory of the worker, integrity checked in full and fingerprinted (`drills.py`); and point-in-time
restores of one team database into a new volume, persisted as a state machine so every step can be resumed after a
crash (`restore.py`)."""

from django.db import models

from teams.models import Team


class RestoreDrill(models.Model):
    class Status(models.TextChoices):
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        TIMED_OUT = "timed out"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="restore_drills")
    database = models.CharField(max_length=210)
    started_at = models.DateTimeField(db_index=True)
    duration_seconds = models.FloatField()
    # Of the duration, the restore itself (credentials, window, `litestream restore`), before the integrity check
    # and the fingerprint; None when nothing was restored.
    restore_seconds = models.FloatField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    # The restored point: its transaction (hex, as Litestream names it) and time; empty when nothing was restored.
    restored_txid = models.CharField(max_length=16, blank=True)
    restored_point_at = models.DateTimeField(null=True, blank=True)
    # How far the newest restorable point lagged behind the live database (its last heartbeat) at the drill.
    lag_seconds = models.FloatField(null=True, blank=True)
    # Tables, their row counts and a content hash of the restored database.
    fingerprint = models.JSONField(default=dict, blank=True)
    # Whether the fingerprint equals the one the instance reported for the restored txid; None: none reported.
    fingerprint_matched = models.BooleanField(null=True, blank=True)
    message = models.TextField(blank=True)
    actor = models.CharField(max_length=200)
    # Set on the first failed drill of an episode: it alerted; a passing drill ends the episode.
    alerted = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["team", "-started_at"])]
        permissions = [("run_drill", "Can run a team's restore drill now")]

    @property
    def passed(self) -> bool:
        return self.status == self.Status.SUCCEEDED and self.fingerprint_matched is not False


class Restore(models.Model):
    """One point-in-time restore of a team database, advanced step by step by `restore.advance_restore`:
    requested → volume created → restored (integrity-checked) → preview running, where it waits for a person;
    confirmed, it is swapping → swapped in (the previous volume kept CLOUDCTL_RESTORE_KEEP_DAYS); swapped back
    on request (swapping back → swapped back). Cancelled or failed before the swap, its volume is deleted."""

    class State(models.TextChoices):
        REQUESTED = "requested", "Requested"
        VOLUME_CREATED = "volume_created", "New volume created"
        RESTORED = "restored", "Restored and integrity-checked"
        PREVIEW_RUNNING = "preview_running", "Preview running: waiting for confirmation"
        SWAPPING = "swapping", "Swapping in"
        SWAPPED = "swapped", "Swapped in"
        SWAPPING_BACK = "swapping_back", "Swapping back"
        SWAPPED_BACK = "swapped_back", "Swapped back"
        CANCELLED = "cancelled", "Cancelled"
        FAILED = "failed", "Failed"

    # Where a run has nothing to do until a person acts (confirm, swap back) or ever again.
    WAITING = (State.PREVIEW_RUNNING, State.SWAPPED)
    FINISHED = (State.SWAPPED_BACK, State.CANCELLED, State.FAILED)
    # Before the swap: what cancel may stop and a failure ends.
    BEFORE_SWAP = (State.REQUESTED, State.VOLUME_CREATED, State.RESTORED, State.PREVIEW_RUNNING)

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="restores")
    database = models.CharField(max_length=210)
    # The point the plan chose when requested (window.RestorePoint), in Litestream's terms for `restore -txid`.
    target_txid = models.BigIntegerField()
    target_time = models.DateTimeField()
    # Where the backend put the new volume (its create_restore_volume), once created.
    volume = models.CharField(max_length=500, blank=True)
    # The preview's private base URL (reached by the control plane only, with the preview secret).
    preview_url = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.REQUESTED)
    # Why the last step failed (a failed restore, or a swap being retried); safe to show.
    message = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    swapped_at = models.DateTimeField(null=True, blank=True)
    swapped_back_at = models.DateTimeField(null=True, blank=True)
    # When what the restore kept apart from the live volume was deleted (after the keep period, or at once for
    # a cancelled or failed restore); a swap back is impossible from then on.
    volumes_deleted_at = models.DateTimeField(null=True, blank=True)
    # One run at a time advances a restore (instances.holders).
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]
        permissions = [("restore_database", "Can restore a team's database to a point in time")]

    def __str__(self) -> str:
        return f"restore {self.pk} of {self.team.slug}/{self.database} to txid {self.target_txid:016x}"


class ReportedFingerprint(models.Model):
    """The latest fingerprint a team's own instance reported for one of its databases at a transaction Litestream
    had synced (instance/fingerprint.py); a drill restores that txid and compares."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="reported_fingerprints")
    database = models.CharField(max_length=210)
    txid = models.BigIntegerField()
    fingerprint = models.JSONField()
    reported_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "database"], name="one_reported_fingerprint")]
