"""Restore drills (issue 16): a team's latest backup restored in a scratch directory on the worker with read-only
credentials for the team's prefix, integrity-checked in full by Litestream, and fingerprinted.

Litestream gets the credentials in its environment only (never in its config or arguments; its config holds the
replica's place alone), and the scratch directory is always removed. Which teams are due: each team's next drill
is its last plus `DRILL_PERIOD`, oldest first, at most `DRILL_BUDGET_DRILLS` drills or `DRILL_BUDGET_SECONDS` per
run, so every team is drilled at least once a period, spread over it, and drills never starve other work.
"""

import importlib.util
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import F, Max, Q
from django.utils import timezone

from instances.backends.base import BackendError, RestoreSource
from instances.backends.replica_restore import host_litestream, restore_replica
from instances.models import Instance
from teams import timeline
from teams.models import Team
from teams.permissions import Actor

from .models import ReportedFingerprint, RestoreDrill
from .replicas import (
    DEFAULT_DATABASE, UnreadableReplica, minted_read_only_credentials, replica_path, window_with_credentials,
)
from .window import EmptyReplica, RestorableWindow, RestorePlan, RestorePoint, format_txid, plan_for_txid


def _load_instance_fingerprint():
    """instance/fingerprint.py, the one definition of a fingerprint: the instance's program is not a package of
    the project (it runs without Django), so it is loaded by its path."""
    path = Path(__file__).resolve().parent.parent / "instance" / "fingerprint.py"
    spec = importlib.util.spec_from_file_location("cloudctl_instance_fingerprint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_instance_fingerprint = _load_instance_fingerprint()
database_fingerprint, interrupt_after = _instance_fingerprint.database_fingerprint, _instance_fingerprint.interrupt_after
# What a drill leaves free of its scratch file system at least: a team's replica (which its instance, hostile by
# the trust model, writes) never fills the worker's disk.
SCRATCH_HEADROOM = 0.1


def replica_source(team: Team, database: str, txid_hex: str, credentials) -> RestoreSource:
    """The team's replica of `database` as this process reads replicas (boto3's AWS_ENDPOINT_URL and
    AWS_DEFAULT_REGION, as `replicas.py`), up to `txid_hex`, with read-only `credentials`."""
    return RestoreSource(
        bucket=settings.BACKUP_BUCKET, path=replica_path(team, database),
        region=os.environ.get("AWS_DEFAULT_REGION") or settings.INSTANCE_S3_REGION,
        endpoint=os.environ.get("AWS_ENDPOINT_URL", ""), txid_hex=txid_hex, access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key, session_token=credentials.session_token)


class DrillFailed(Exception):
    """The drill failed; the message is safe to show (no key, no path outside the scratch directory)."""


class DrillTimedOut(Exception):
    """The restore and its checks did not finish within `DRILL_TIMEOUT`."""


def check_scratch_space(scratch: Path, plan: RestorePlan) -> None:
    """Refuse a restore the scratch file system cannot hold while keeping `SCRATCH_HEADROOM` of it free."""
    usage = shutil.disk_usage(scratch)
    needed = plan.database_bytes + plan.download_bytes
    if needed > usage.free - usage.total * SCRATCH_HEADROOM:
        raise DrillFailed(f"the restore needs {needed:,} bytes of scratch space and the worker keeps "
                          f"{SCRATCH_HEADROOM:.0%} of its {usage.total:,} free ({usage.free:,} free now)")


def drill_point(window: RestorableWindow, reported: ReportedFingerprint | None) -> RestorePoint:
    """The reported fingerprint's txid when the window holds it (so the drill can compare), else the newest."""
    if reported is not None:
        for point in window.points:
            if point.txid == reported.txid:
                return point
    return window.newest


def full_integrity_check(path: Path, *, deadline: float) -> None:
    """SQLite's `PRAGMA integrity_check` (what Litestream's `-integrity-check full` runs) on the restored copy."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    interrupt_after(connection, deadline)
    try:
        problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()
    if problems != ["ok"]:
        raise DrillFailed(f"the restored database fails its integrity check: {'; '.join(problems[:5])}")


def checked_fingerprint(path: Path, *, deadline: float) -> dict:
    """The restored copy's full integrity check and its fingerprint, side by side: both only read the file, and
    SQLite lets the other thread run while it works, so a drill costs the longer of the two, not their sum. Both
    stop at `deadline` (DrillTimedOut): a copy crafted to be slow to read holds the worker no longer than that."""
    try:
        with ThreadPoolExecutor(max_workers=1) as checker:
            checked = checker.submit(full_integrity_check, path, deadline=deadline)
            try:
                fingerprint = database_fingerprint(path, deadline=deadline)
            finally:
                checked.result()  # raises DrillFailed (or sqlite3.Error) for a damaged copy
    except sqlite3.OperationalError:
        if time.monotonic() > deadline:
            raise DrillTimedOut from None
        raise
    return fingerprint


def drill_team(team: Team, *, actor: Actor, database: str = DEFAULT_DATABASE) -> RestoreDrill:
    """Restore the team's latest backup of `database` in a scratch directory, check it in full, fingerprint it
    and record the drill. A failed drill after a passing one (or none) alerts once: the episode's first."""
    started, clock = timezone.now(), time.monotonic()
    deadline = clock + settings.DRILL_TIMEOUT
    drill = RestoreDrill(team=team, database=database, started_at=started, actor=str(actor))
    scratch = Path(tempfile.mkdtemp(prefix=f"drill-{team.pk}-"))
    try:
        credentials = minted_read_only_credentials(team, actor=actor)
        window = window_with_credentials(team, database, credentials)
        if window.newest.txid < window.replicated_txid:
            # Restoring the last point before the gap would pass while the team's latest data is lost.
            raise DrillFailed(f"the replica's newest transaction {format_txid(window.replicated_txid)} is not "
                              f"restorable: its chain of files breaks after {window.newest.txid_hex}")
        reported = ReportedFingerprint.objects.filter(team=team, database=database).first()
        # The point first, so that the drill restores exactly the point it records (and its time).
        point = drill_point(window, reported)
        check_scratch_space(scratch, plan_for_txid(window, point.txid))
        restored = scratch / f"restored-{database}"
        try:
            summary = restore_replica(host_litestream(), replica_source(team, database, point.txid_hex, credentials),
                                      database, restored, work_dir=scratch, timeout=deadline - time.monotonic(),
                                      integrity_check="none")
        except BackendError as error:
            raise DrillFailed(str(error)) from None
        drill.restore_seconds = time.monotonic() - clock
        if int(summary.get("txid", "0"), 16) != point.txid:
            raise DrillFailed(f"litestream restored txid {summary.get('txid')!r}, not {point.txid_hex}")
        drill.fingerprint = checked_fingerprint(restored, deadline=deadline)
        drill.restored_txid, drill.restored_point_at = point.txid_hex, point.time
        if reported is not None and reported.txid == point.txid:
            drill.fingerprint_matched = drill.fingerprint == reported.fingerprint
            if not drill.fingerprint_matched:
                raise DrillFailed(f"txid {point.txid_hex} restored differs from what the instance reported for it "
                                  f"(rows {drill.fingerprint['tables']}, reported {reported.fingerprint['tables']})")
        drill.status = RestoreDrill.Status.SUCCEEDED
    except (subprocess.TimeoutExpired, DrillTimedOut):
        drill.status = RestoreDrill.Status.TIMED_OUT
        drill.message = f"no restore and check within {settings.DRILL_TIMEOUT}s"
    except (DrillFailed, UnreadableReplica, EmptyReplica, sqlite3.Error, ValueError) as error:
        drill.status, drill.message = RestoreDrill.Status.FAILED, str(error)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    drill.duration_seconds = time.monotonic() - clock
    last_heartbeat = Instance.objects.filter(team=team).values_list("last_backup_at", flat=True).first()
    if drill.restored_point_at and last_heartbeat:
        drill.lag_seconds = max(0.0, (last_heartbeat - drill.restored_point_at).total_seconds())
    previous = RestoreDrill.objects.filter(team=team).order_by("-started_at").first()
    if not drill.passed:
        drill.alerted = previous is None or previous.passed
        if drill.alerted:
            timeline.record(team, timeline.Kind.RESTORE_DRILL_FAILED,
                            f"ALERT: restore drill {drill.status}: {drill.message or 'no detail'}",
                            actor=str(actor), is_error=True)
    elif previous is not None and not previous.passed:
        timeline.record(team, timeline.Kind.RESTORE_DRILL_PASSED,
                        f"restore drill passed again (txid {drill.restored_txid})", actor=str(actor))
    drill.save()
    return drill


def due_teams(now: datetime | None = None) -> list[Team]:
    """Teams with a running instance whose last drill is older than DRILL_PERIOD (or none), longest due first."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.DRILL_PERIOD)
    teams = Team.objects.filter(instance__state=Instance.State.RUNNING).annotate(
        last_drill=Max("restore_drills__started_at")).filter(Q(last_drill__isnull=True) | Q(last_drill__lt=cutoff))
    return list(teams.order_by(F("last_drill").asc(nulls_first=True), "pk"))


def drill_due_teams(*, actor: Actor) -> list[RestoreDrill]:
    """Drill due teams within the run's budget of drills and seconds."""
    deadline, drills = time.monotonic() + settings.DRILL_BUDGET_SECONDS, []
    for team in due_teams()[:settings.DRILL_BUDGET_DRILLS]:
        if time.monotonic() >= deadline:
            break
        drills.append(drill_team(team, actor=actor))
    return drills
