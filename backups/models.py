"""Restore drills: each is a restore of a team's latest backup in a scratch directory of the worker, integrity
checked in full and fingerprinted (`drills.py`)."""

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

    @property
    def passed(self) -> bool:
        return self.status == self.Status.SUCCEEDED and self.fingerprint_matched is not False
