"""Point-in-time restore of a team's database (issue 16), never in place: the plan (which point of the replica a
request names: a time, a transaction, the latest; refused with the nearest valid points outside the restorable
window), then a persisted state machine (`models.Restore`) advanced one idempotent step at a time by
`advance_restore`: a new volume, Litestream's restore of the pinned transaction into it (full integrity check), a
preview of it that only the control plane reaches (with `preview_secret`), and, on a person's confirmation, the
swap; the volume it replaced is kept CLOUDCTL_RESTORE_KEEP_DAYS and can be swapped back.

Every step runs in the worker (`tasks.run_restore`), one run at a time per restore (its claim), and
`tend_restores` (periodic) resumes a step a crash interrupted and deletes what outlived its keep period. The
requests people make (`restore_requests.py`) only record the wish and queue the run: no backend call happens in a
request."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from instances.backends import BackendError, BackendUnavailable
from instances.backends.base import RestoreSource
from instances.holders import claim_row, release_row
from instances.machines import get_backend
from instances.models import Instance
from instances.provisioning import ProvisioningBusy, claim, release
from teams import timeline
from teams.models import Team
from teams.permissions import RESTORE_DATABASE, Actor, authorize

from . import replicas
from .models import Restore
from .replicas import replica_path, replica_window
from .window import RestorableWindow, RestorePlan, format_txid, latest_plan, plan_at_time, plan_for_txid

RESTORE_PERMISSION = RESTORE_DATABASE
# A step restores a whole replica at worst (the local backend allows it an hour): a run's claim outlasts it.
CLAIM = timedelta(minutes=70)
# Restores that are neither waiting for a person nor ended: a team has at most one.
IN_PROGRESS = (Restore.State.REQUESTED, Restore.State.VOLUME_CREATED, Restore.State.RESTORED,
               Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPING, Restore.State.SWAPPING_BACK)


class RestoreRefused(Exception):
    """The restore cannot move from its state as asked; the message is safe to show."""


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


def preview_secret(restore: Restore) -> str:
    """What the control plane sends the restore's preview (header X-Cloudctl-Preview), derived from the
    SECRET_KEY and never stored: a preview answers nobody else, another restore's preview included."""
    return salted_hmac("cloudctl.backups.restore-preview", str(restore.pk), algorithm="sha256").hexdigest()


# --- the worker's side ------------------------------------------------------------------------------------

def run_restore(restore: Restore, *, actor: Actor) -> Restore:
    """Advance the restore until it waits for a person, ends, or a step must be tried again later (the
    periodic `tend_restores` does)."""
    while True:
        before = Restore.objects.get(pk=restore.pk)
        after = advance_restore(before, actor=actor)
        if (after.state, after.volumes_deleted_at) == (before.state, before.volumes_deleted_at):
            return after
        if after.state in Restore.WAITING:  # just arrived: its preview or its instance was started this run
            return after


def advance_restore(restore: Restore, *, actor: Actor) -> Restore:
    """Take the restore one step on from its persisted state, under its claim (a run that finds it claimed by a
    live run leaves it). Each step is idempotent, so a run after a crash finishes what the crashed one started.
    A step that fails for good ends a restore before its swap as failed; one the platform may still take (it
    was busy or unreachable), and any failure of a swap, stays where it is with the reason, for the next run."""
    who = authorize(actor, RESTORE_PERMISSION)
    rows = Restore.objects.filter(pk=restore.pk)
    owner, _ = claim_row(rows, CLAIM)
    if owner is None:
        return rows.get()
    try:
        restore = rows.get()
        step = _STEPS.get(restore.state)
        if step is not None:
            _take_step(restore, step, who)
        elif restore.state == Restore.State.PREVIEW_RUNNING:
            _keep_preview_running(restore)
        elif _should_delete_volumes(restore):
            _delete_volumes(restore)
    finally:
        release_row(rows, owner)
    return rows.get()


def tend_restores(*, actor: Actor, now: datetime | None = None) -> list[Restore]:
    """Resume every restore a run should be working on (a crash or a busy platform stopped it), start again a
    preview that stopped, and delete what restores kept past their keep period. Returns the restores it advanced."""
    now = now or timezone.now()
    kept_since = now - timedelta(days=settings.RESTORE_KEEP_DAYS)
    due = Restore.objects.filter(
        Q(state__in=IN_PROGRESS)
        | Q(volumes_deleted_at__isnull=True) & (
            Q(state__in=[Restore.State.CANCELLED, Restore.State.FAILED])
            | Q(state=Restore.State.SWAPPED, swapped_at__lt=kept_since)
            | Q(state=Restore.State.SWAPPED_BACK, swapped_back_at__lt=kept_since)))
    return [run_restore(restore, actor=actor) for restore in due.select_related("team")]


def _take_step(restore: Restore, step, who: str) -> None:
    before = restore.state
    try:
        # The step runs outside any transaction (a restore may take long and must not hold the database's
        # write lock, SQLite's especially); only the run holding the claim saves its outcome.
        fields = step(restore, who)
    except (BackendUnavailable, ProvisioningBusy, replicas.minting_failed) as error:
        Restore.objects.filter(pk=restore.pk).update(message=f"will retry: {error}")
        return
    except (BackendError, RestoreRefused, NotImplementedError) as error:
        _failed(restore, before, str(error), who)
        return
    Restore.objects.filter(pk=restore.pk, state=before).update(message="", updated_at=timezone.now(), **fields)


def _failed(restore: Restore, before: str, message: str, who: str) -> None:
    if before in Restore.BEFORE_SWAP:
        if move(restore, before, Restore.State.FAILED, message=message):
            timeline.record(restore.team, timeline.Kind.RESTORE_FAILED, f"{restore} failed: {message}", actor=who,
                            is_error=True)
    else:  # a swap half done must be finished, never abandoned: the next run tries again
        Restore.objects.filter(pk=restore.pk).update(message=f"will retry: {message}")


def _instance(restore: Restore) -> Instance:
    try:
        return restore.team.instance
    except Instance.DoesNotExist:
        raise RestoreRefused(f"team {restore.team.slug} has no instance to restore into") from None


def _backend(restore: Restore):
    return get_backend(_instance(restore).backend)


def _create_volume(restore: Restore, who: str) -> dict:
    resources = _backend(restore).create_restore_volume(_instance(restore), restore.pk)
    return {"volume": resources["volume"], "state": Restore.State.VOLUME_CREATED}


def _restore_into_volume(restore: Restore, who: str) -> dict:
    """Litestream restores the pinned txid into the new volume with read-only credentials minted for `who`."""
    credentials = replicas.read_only_credentials(restore.team, actor=who)
    source = RestoreSource(
        bucket=settings.BACKUP_BUCKET, path=replica_path(restore.team, restore.database),
        region=settings.INSTANCE_S3_REGION, endpoint=settings.INSTANCE_S3_ENDPOINT,
        txid_hex=format_txid(restore.target_txid), access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key, session_token=credentials.session_token)
    _backend(restore).restore_into_volume(_instance(restore), restore.pk, restore.database, source)
    return {"state": Restore.State.RESTORED}


def _start_preview(restore: Restore, who: str) -> dict:
    started = _backend(restore).start_preview(_instance(restore), restore.pk, preview_secret(restore))
    timeline.record(restore.team, timeline.Kind.RESTORE_PREVIEW, f"{restore}: preview running", actor=who)
    return {"preview_url": started["url"], "state": Restore.State.PREVIEW_RUNNING}


def _keep_preview_running(restore: Restore) -> None:
    """A preview waiting for a person is started again if it stopped (the host restarted, `manage.py dev` ended):
    `start_preview` is idempotent and answers where it runs."""
    try:
        started = _backend(restore).start_preview(_instance(restore), restore.pk, preview_secret(restore))
    except (BackendError, RestoreRefused, NotImplementedError) as error:
        Restore.objects.filter(pk=restore.pk).update(message=f"the preview is not running: {error}")
        return
    Restore.objects.filter(pk=restore.pk, state=Restore.State.PREVIEW_RUNNING).update(
        preview_url=started["url"], message="")


def stop_previews(backend_path: str) -> int:
    """Stop the running previews of a backend's instances (the control plane running them is going down);
    `tend_restores` starts them again. Returns how many it stopped."""
    previewing = Restore.objects.filter(state=Restore.State.PREVIEW_RUNNING, team__instance__backend=backend_path)
    backend = get_backend(backend_path)
    for restore in previewing.select_related("team__instance"):
        backend.stop_preview(restore.team.instance, restore.pk)
    return len(previewing)


def _under_instance_claim(restore: Restore, change) -> dict:
    """Run `change` on the live instance holding its provisioning claim: the reconciler and provisioning leave a
    claimed instance alone, so nothing starts it on the old volume halfway through a swap."""
    instance = _instance(restore)
    owner = claim(instance)
    try:
        resources = change(instance, restore.pk)
        if resources:
            Instance.objects.filter(pk=instance.pk).update(resources={**instance.resources, **resources})
        return resources
    finally:
        release(instance, owner)


def _swap_in(restore: Restore, who: str) -> dict:
    _under_instance_claim(restore, _backend(restore).swap_in_restore)
    timeline.record(restore.team, timeline.Kind.RESTORE_SWAPPED,
                    f"{restore} swapped in; the replaced volume is kept {settings.RESTORE_KEEP_DAYS} days", actor=who)
    return {"state": Restore.State.SWAPPED, "swapped_at": timezone.now(), "preview_url": ""}


def _swap_back(restore: Restore, who: str) -> dict:
    _under_instance_claim(restore, _backend(restore).swap_back_restore)
    timeline.record(restore.team, timeline.Kind.RESTORE_SWAPPED_BACK,
                    f"{restore} swapped back: the instance runs on the volume it replaced again", actor=who)
    return {"state": Restore.State.SWAPPED_BACK, "swapped_back_at": timezone.now()}


_STEPS = {
    Restore.State.REQUESTED: _create_volume,
    Restore.State.VOLUME_CREATED: _restore_into_volume,
    Restore.State.RESTORED: _start_preview,
    Restore.State.SWAPPING: _swap_in,
    Restore.State.SWAPPING_BACK: _swap_back,
}


def _should_delete_volumes(restore: Restore) -> bool:
    if restore.volumes_deleted_at is not None:
        return False
    if restore.state in (Restore.State.CANCELLED, Restore.State.FAILED):
        return True
    kept_since = timezone.now() - timedelta(days=settings.RESTORE_KEEP_DAYS)
    ended = {Restore.State.SWAPPED: restore.swapped_at, Restore.State.SWAPPED_BACK: restore.swapped_back_at}
    return restore.state in ended and ended[restore.state] is not None and ended[restore.state] < kept_since


def _delete_volumes(restore: Restore) -> None:
    instance = Instance.objects.filter(team=restore.team).first()
    if instance is not None and instance.state != Instance.State.DESTROYED:
        backend = get_backend(instance.backend)
        try:
            if restore.state in (Restore.State.CANCELLED, Restore.State.FAILED):
                backend.stop_preview(instance, restore.pk)
            backend.delete_restore_volumes(instance, restore.pk)
        except NotImplementedError:
            pass  # a backend without restores made nothing to delete
        except BackendError as error:
            if restore.state != Restore.State.FAILED:  # a failure's own reason stays the one shown
                Restore.objects.filter(pk=restore.pk).update(message=f"deleting its volumes will be retried: {error}")
            return
    Restore.objects.filter(pk=restore.pk).update(volumes_deleted_at=timezone.now(), preview_url="")


def move(restore: Restore, source: str, target: str, **fields) -> bool:
    """Compare-and-set of the state: True if this call moved it."""
    return bool(Restore.objects.filter(pk=restore.pk, state=source).update(
        state=target, updated_at=timezone.now(), **fields))
