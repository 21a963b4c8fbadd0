"""What instances tell the control plane, and the backup-freshness watch built on it.

Litestream pings its `heartbeat-url` only when every database synced within the heartbeat interval, so the
last heartbeat is the time of the team's last known-good backup. datasette-scale-to-zero calls its
`shutdown_url` just before the instance exits when idle or at its max age. The private API verifies the
signed URL (credentials/services.py) and calls these functions. A shutdown URL is bound to the instance's boot
(`record_boot`), and a shutdown does not outweigh what the backend sees (`watch_machines_still_running`). What
counts as stale, and which boot is current, are reads (`selectors.py`).
"""

import functools
import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from instances.backends import BackendError, ObservedState
from instances.machines import observe_by_backend
from instances.models import Instance
from teams import timeline
from teams.models import Team

from .models import ReportedFingerprint
from .replicas import DATABASE_NAME
from .selectors import stale_backups_q

logger = logging.getLogger(__name__)
# How long a machine has to exit after its shutdown signal (datasette-scale-to-zero posts it just before Datasette
# exits; Litestream's final sync follows, within Fly's kill_timeout) before one still running is watched again.
SHUTDOWN_GRACE = timedelta(minutes=2)


def record_backup_heartbeat(team: Team, *, actor: str) -> datetime:
    """Litestream reports every database synced: the team's backups are fresh as of now."""
    now = timezone.now()
    instance = Instance.objects.filter(team=team).first()
    if instance is None:
        return now
    Instance.objects.filter(pk=instance.pk).update(last_backup_at=now, backup_alerted_at=None)
    if instance.state == Instance.State.RUNNING and instance.backups_expected_since is None:
        # Running again after a scale to zero (Fly restarts it on a request without telling us): watch again.
        Instance.objects.filter(pk=instance.pk, backups_expected_since__isnull=True).update(
            backups_expected_since=now)
    if instance.backup_alerted_at is not None:
        timeline.record(team, timeline.Kind.BACKUP_RESUMED, "Litestream reports every database backed up again",
                        actor=actor)
    return now


# A running instance whose backup watch a shutdown signal stopped.
WATCH_STOPPED = Q(state=Instance.State.RUNNING, backups_expected_since__isnull=True)


def record_boot(team: Team, boot: str, *, actor: str) -> None:
    """The instance exchanged credentials under this boot id: from now on only this boot's shutdown URL counts.
    A new boot also means the instance runs again: on Fly a Machine woken from scale to zero by a request
    tells cloudctl nothing else, so this is where the backup watch resumes for it."""
    # Usually the watch is on, and recording the boot is all there is to do: one UPDATE.
    with connection.cursor() as cursor:
        cursor.execute(_new_boot_while_watched_statement(), [boot, team.pk, boot, Instance.State.RUNNING.value])
        if cursor.rowcount:
            return
    if Instance.objects.filter(team=team).exclude(boot_id=boot).update(boot_id=boot):  # not a renewal
        resume_backup_watch(team, timezone.now(), "the instance started again", actor=actor)


@functools.cache
def _new_boot_while_watched_statement() -> str:
    """The boot's UPDATE for an instance not WATCH_STOPPED, written out once: it is on every new boot's credential
    exchange, where the ORM took longer to compile it than the exchange's other statements took to run."""
    quote, meta = connection.ops.quote_name, Instance._meta

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    return (f"UPDATE {quote(meta.db_table)} SET {column('boot_id')} = %s WHERE {column('team')} = %s "
            f"AND {column('boot_id')} <> %s AND NOT ({column('state')} = %s AND "
            f"{column('backups_expected_since')} IS NULL)")


def resume_backup_watch(team: Team, now: datetime, why: str, *, actor: str) -> bool:
    """A running instance the watch was stopped for (by a shutdown signal) owes heartbeats again from `now`."""
    resumed = Instance.objects.filter(WATCH_STOPPED, team=team).update(backups_expected_since=now)
    if resumed:
        timeline.record(team, timeline.Kind.BACKUP_WATCH_RESUMED, f"{why}: backup heartbeats are owed again",
                        actor=actor)
    return bool(resumed)


def watch_machines_still_running(now: datetime, *, actor: str) -> list[Team]:
    """A shutdown signal stops the watch, but the machine is what counts: one its backend still sees running
    once it has had time to exit (a replayed or forged shutdown, a plugin that reported and kept running) is
    watched again. One bulk read per backend, only while some team is scaled to zero."""
    candidates = list(Instance.objects.filter(
        state=Instance.State.RUNNING, backups_expected_since__isnull=True, scaled_to_zero_at__lt=now - SHUTDOWN_GRACE,
    ).select_related("team"))
    resumed = []
    for group, observed in observe_by_backend(candidates):
        if isinstance(observed, BackendError):
            logger.warning("could not read which scaled-to-zero instances run (%s); checking again next time",
                           observed)
            continue
        resumed += [instance.team for instance in group if observed.get(instance.team_id) is ObservedState.RUNNING
                    and resume_backup_watch(instance.team, now, "the machine still runs after its shutdown signal",
                                            actor=actor)]
    return resumed


def scale_to_zero_reason(report: dict) -> str:
    """The instance reports its start time and limits; which one it reached is the reason."""
    started, max_age, idle = report.get("started_at"), report.get("max_age"), report.get("idle_timeout")
    if isinstance(started, (int, float)) and isinstance(max_age, int) and not isinstance(max_age, bool):
        if timezone.now().timestamp() - started >= max_age:
            return f"max age reached ({max_age}s): restarting for fresh credentials"
    if isinstance(idle, int) and not isinstance(idle, bool):
        return f"idle for {idle}s"
    return "unknown"


def record_scale_to_zero(team: Team, report: dict, *, actor: str) -> str:
    """datasette-scale-to-zero is about to exit: no heartbeats are owed until the instance runs again."""
    reason = scale_to_zero_reason(report)
    Instance.objects.filter(team=team).update(
        scaled_to_zero_at=timezone.now(), scaled_to_zero_reason=reason, backups_expected_since=None)
    timeline.record(team, timeline.Kind.SCALED_TO_ZERO, f"instance scaled to zero: {reason}", actor=actor,
                    data={"reason": reason})
    return reason


def check_backup_freshness(now: datetime | None = None, *, actor: str) -> list[Team]:
    """Raise one alert per team whose backups went stale (logged as an error, on its timeline); returns them.

    Run periodically (`manage.py check_backups`, the `check_backups` task, `manage.py dev`)."""
    now = now or timezone.now()
    watch_machines_still_running(now, actor=actor)
    stale = stale_backups_q(now)
    newly = list(Instance.objects.filter(stale, backup_alerted_at__isnull=True).select_related("team"))
    for instance in newly:
        last = instance.last_backup_at.isoformat(timespec="seconds") if instance.last_backup_at else "never"
        timeline.record(instance.team, timeline.Kind.BACKUP_STALE,
                        f"ALERT: no backup heartbeat for over {settings.BACKUP_STALE_AFTER}s (last: {last})",
                        actor=actor, data={"last_backup_at": last if instance.last_backup_at else None},
                        is_error=True)
    Instance.objects.filter(pk__in=[instance.pk for instance in newly]).update(backup_alerted_at=now)
    # An instance that stopped is no longer stale: a later episode alerts again.
    Instance.objects.filter(backup_alerted_at__isnull=False).exclude(stale).update(backup_alerted_at=None)
    return [instance.team for instance in newly]


# A fingerprint as instance/fingerprint.py computes it: {"tables": {name: rows}, "sha256": hex}.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MAX_REPORTED_TABLES = 10_000


class BadReport(ValueError):
    """What the instance sent is not a report; the message is safe to show."""


def _reported_fingerprint(report: dict) -> tuple[str, int, dict]:
    database, txid, fingerprint = report.get("database"), report.get("txid"), report.get("fingerprint")
    if not isinstance(database, str) or not DATABASE_NAME.fullmatch(database):
        raise BadReport("database: not a database name")
    if isinstance(txid, bool) or not isinstance(txid, int) or not 0 < txid < 2 ** 63:
        raise BadReport("txid: not a transaction id")
    if not isinstance(fingerprint, dict) or set(fingerprint) != {"tables", "sha256"}:
        raise BadReport("fingerprint: expected tables and sha256")
    tables, digest = fingerprint["tables"], fingerprint["sha256"]
    if (not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest) or not isinstance(tables, dict)
            or len(tables) > MAX_REPORTED_TABLES
            or not all(isinstance(rows, int) and not isinstance(rows, bool) and rows >= 0 for rows in tables.values())):
        raise BadReport("fingerprint: expected tables (name: rows) and a SHA-256")
    return database, txid, {"tables": tables, "sha256": digest}


def record_fingerprint(team: Team, report: dict, *, actor: str) -> ReportedFingerprint:
    """The team's instance reports its database's fingerprint at a txid Litestream synced: kept as the team's
    latest for that database, for the next drill to compare. Raises BadReport."""
    database, txid, fingerprint = _reported_fingerprint(report)
    reported, _ = ReportedFingerprint.objects.update_or_create(
        team=team, database=database,
        defaults={"txid": txid, "fingerprint": fingerprint, "reported_at": timezone.now()})
    return reported
