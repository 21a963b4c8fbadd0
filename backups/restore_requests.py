"""What people ask of a point-in-time restore (issue 16): request one, confirm its swap, swap it back, cancel it.
Each records the wish (a compare-and-set of the restore's state) and queues the worker's run
(`tasks.run_restore_task`, which advances it through `restore.py`): no backend call happens in a request. The
console, the members' pages and `manage.py restore` call these."""

from datetime import datetime

from django.conf import settings

from instances.models import Instance
from teams import timeline
from teams.models import Team
from teams.permissions import Actor, authorize

from .models import Restore
from .restore import IN_PROGRESS, RESTORE_PERMISSION, RestoreRefused, move, plan_restore
from .tasks import run_restore_task


def request_restore(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                    actor: Actor) -> Restore:
    """Plan a restore (as `plan_restore`, with its exceptions), record it in state requested, pinned to the
    point the plan chose (a later step restores exactly that point whatever the replica gains meanwhile), and
    queue its run. RestoreRefused for a team without an instance or with a restore in progress."""
    who = authorize(actor, RESTORE_PERMISSION)
    if not Instance.objects.filter(team=team).exclude(state=Instance.State.DESTROYED).exists():
        raise RestoreRefused(f"team {team.slug} has no instance to restore into")
    _refuse_if_in_progress(team)
    _, plan = plan_restore(team, database=database, timestamp=timestamp, txid=txid, actor=actor)
    restore = Restore.objects.create(team=team, database=database, target_txid=plan.point.txid,
                                     target_time=plan.point.time, requested_by=who)
    timeline.record(team, timeline.Kind.RESTORE_REQUESTED,
                    f"{restore} ({plan.point.time.isoformat(timespec='seconds')}) requested", actor=who)
    _queue_run(restore, who)
    return restore


def confirm_swap(restore: Restore, *, actor: Actor) -> Restore:
    """Swap the previewed restore in (queued; idempotent once confirmed)."""
    who = authorize(actor, RESTORE_PERMISSION)
    if not move(restore, Restore.State.PREVIEW_RUNNING, Restore.State.SWAPPING):
        restore.refresh_from_db()
        if restore.state not in (Restore.State.SWAPPING, Restore.State.SWAPPED):
            raise RestoreRefused(f"{restore} is {restore.get_state_display().lower()}: only a running preview "
                                 "can be swapped in")
    _queue_run(restore, who)
    return Restore.objects.get(pk=restore.pk)


def request_swap_back(restore: Restore, *, actor: Actor) -> Restore:
    """Put back the volume the restore's swap replaced (queued; idempotent once asked). Only the team's latest
    swap can be undone, and only while the replaced volume is kept."""
    who = authorize(actor, RESTORE_PERMISSION)
    restore.refresh_from_db()
    if restore.state not in (Restore.State.SWAPPED, Restore.State.SWAPPING_BACK, Restore.State.SWAPPED_BACK):
        raise RestoreRefused(f"{restore} is {restore.get_state_display().lower()}: only a swapped-in restore can "
                             "be swapped back")
    if restore.state == Restore.State.SWAPPED:
        if restore.volumes_deleted_at:
            raise RestoreRefused(f"{restore}: the volume it replaced was deleted on "
                                 f"{restore.volumes_deleted_at:%Y-%m-%d} (kept {settings.RESTORE_KEEP_DAYS} days)")
        later = Restore.objects.filter(team=restore.team, swapped_at__gt=restore.swapped_at)
        if later.exists():
            raise RestoreRefused(f"{restore}: a later restore was swapped in since; swap that one back first")
        if Restore.objects.filter(team=restore.team, state__in=IN_PROGRESS).exclude(pk=restore.pk).exists():
            raise RestoreRefused(f"{restore}: another restore of team {restore.team.slug} is in progress")
        move(restore, Restore.State.SWAPPED, Restore.State.SWAPPING_BACK)
    _queue_run(restore, who)
    return Restore.objects.get(pk=restore.pk)


def cancel_restore(restore: Restore, *, actor: Actor) -> Restore:
    """Cancel a restore not swapped in (idempotent); its preview is stopped and its volume deleted by the run
    this queues. Refused once the swap began."""
    who = authorize(actor, RESTORE_PERMISSION)
    for state in Restore.BEFORE_SWAP:
        if move(restore, state, Restore.State.CANCELLED):
            timeline.record(restore.team, timeline.Kind.RESTORE_CANCELLED, f"{restore} cancelled", actor=who)
            _queue_run(restore, who)
            break
    restore.refresh_from_db()
    if restore.state not in (Restore.State.CANCELLED, Restore.State.FAILED):
        raise RestoreRefused(f"{restore} is {restore.get_state_display().lower()}: it cannot be cancelled")
    return restore


def _refuse_if_in_progress(team: Team) -> None:
    busy = Restore.objects.filter(team=team, state__in=IN_PROGRESS).first()
    if busy is not None:
        raise RestoreRefused(f"{busy} is {busy.get_state_display().lower()}: finish or cancel it first")


def _queue_run(restore: Restore, who: str) -> None:
    run_restore_task.enqueue(restore.pk, who)
