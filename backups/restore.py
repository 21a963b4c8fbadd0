"""Point-in-time restore of a team's database (issue 16). What exists so far is the plan: which point of the
replica a request names (a time, a transaction, the latest), refused with the nearest valid points when it lies
outside the restorable window, and the persisted request (models.Restore) that the steps after it will advance.
Built so far: the request and the new volume (`advance_restore`); restoring into it, the preview and the swap are
not built yet and `advance_restore` says so."""

from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from instances.backends import BackendError
from instances.backends.base import RestoreSource
from instances.machines import get_backend
from instances.models import Instance
from teams.models import Team
from teams.permissions import Actor, authorize

from .models import Restore
from . import replicas
from .replicas import replica_path, replica_window
from .window import RestorableWindow, RestorePlan, format_txid, latest_plan, plan_at_time, plan_for_txid


def plan_restore(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                 actor: Actor) -> tuple[RestorableWindow, RestorePlan]:
    """The replica's window and what a restore to `timestamp`, `txid` or (neither) the latest point would
    restore. Changes nothing but the audit row of the read-only credentials it mints for `actor`. Raises
    window.OutsideWindow, window.EmptyReplica, replicas.UnreadableReplica, and ValueError for a bad name."""
    if timestamp is not None and txid is not None:
        raise ValueError("name a time or a transaction, not both")
    window = replica_window(team, database, actor=actor)
    if txid is not None:
        return window, plan_for_txid(window, txid)
    if timestamp is not None:
        return window, plan_at_time(window, timestamp)
    return window, latest_plan(window)


RESTORE_PERMISSION = "backups.restore_database"


class RestoreRefused(Exception):
    """The restore cannot move from its state as asked; the message is safe to show."""


def request_restore(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                    actor: Actor) -> Restore:
    """Plan a restore (as `plan_restore`, with its exceptions) and record it, in state requested, pinned to the
    point the plan chose, so that a later step restores exactly that point whatever the replica gains meanwhile.
    RestoreRefused for a team without an instance."""
    who = authorize(actor, RESTORE_PERMISSION)
    if not Instance.objects.filter(team=team).exists():
        raise RestoreRefused(f"team {team.slug} has no instance to restore into")
    _, plan = plan_restore(team, database=database, timestamp=timestamp, txid=txid, actor=actor)
    return Restore.objects.create(team=team, database=database, target_txid=plan.point.txid,
                                  target_time=plan.point.time, requested_by=who)


def cancel_restore(restore: Restore, *, actor: Actor) -> Restore:
    """Cancel a restore not swapped in (idempotent: cancelling a cancelled restore changes nothing)."""
    authorize(actor, RESTORE_PERMISSION)
    with transaction.atomic():
        restore = Restore.objects.select_for_update().get(pk=restore.pk)
        if restore.state == Restore.State.CANCELLED:
            return restore
        if restore.state in (Restore.State.SWAPPED, Restore.State.SWAPPED_BACK):
            raise RestoreRefused(f"{restore} is {restore.get_state_display().lower()}: it cannot be cancelled")
        restore.state = Restore.State.CANCELLED
        restore.save(update_fields=["state", "updated_at"])
    return restore


def advance_restore(restore: Restore, *, actor: Actor) -> Restore:
    """Take the restore one step on from its persisted state; each step is idempotent, so a run after a crash
    finishes what the crashed one started. Raises RestoreRefused for what cannot be done (a team without an
    instance, a backend without restores, a step not built yet)."""
    authorize(actor, RESTORE_PERMISSION)
    restore = Restore.objects.get(pk=restore.pk)
    before = restore.state
    # The step runs outside any transaction (a restore may take long and must not hold the database's write
    # lock, SQLite's especially); its outcome is saved only if no other run moved the restore meanwhile.
    if before == Restore.State.REQUESTED:
        _create_volume(restore)
    elif before == Restore.State.VOLUME_CREATED:
        _restore_into_volume(restore, actor=actor)
    elif before not in Restore.FINISHED:
        raise RestoreRefused(f"{restore}: {restore.get_state_display().lower()}; the preview and the swap "
                             "are not built yet")
    if restore.state != before:
        Restore.objects.filter(pk=restore.pk, state=before).update(
            state=restore.state, volume=restore.volume, updated_at=timezone.now())
    return Restore.objects.get(pk=restore.pk)


def _instance(restore: Restore) -> Instance:
    try:
        return restore.team.instance
    except Instance.DoesNotExist:
        raise RestoreRefused(f"team {restore.team.slug} has no instance to restore into") from None


def _create_volume(restore: Restore) -> None:
    instance = _instance(restore)
    try:
        resources = get_backend(instance.backend).create_restore_volume(instance, restore.pk)
    except NotImplementedError as error:
        raise RestoreRefused(str(error)) from None
    restore.volume, restore.state = resources["volume"], Restore.State.VOLUME_CREATED


def _restore_into_volume(restore: Restore, *, actor: Actor) -> None:
    """Litestream restores the pinned txid into the new volume with read-only credentials minted for `actor`."""
    instance = _instance(restore)
    try:
        credentials = replicas.read_only_credentials(restore.team, actor=actor)
    except replicas.minting_failed as error:
        raise RestoreRefused(f"{restore}: {error}") from None
    source = RestoreSource(
        bucket=settings.BACKUP_BUCKET, path=replica_path(restore.team, restore.database),
        region=settings.INSTANCE_S3_REGION, endpoint=settings.INSTANCE_S3_ENDPOINT,
        txid_hex=format_txid(restore.target_txid), access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key, session_token=credentials.session_token)
    try:
        get_backend(instance.backend).restore_into_volume(instance, restore.pk, restore.database, source)
    except NotImplementedError as error:
        raise RestoreRefused(str(error)) from None
    except BackendError as error:
        raise RestoreRefused(f"{restore}: {error}") from None
    restore.state = Restore.State.RESTORED
