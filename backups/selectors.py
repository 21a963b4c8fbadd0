"""Reads of the backup watch: which instances' backups are stale (the one definition the team list, the home
page, the metrics and the alerts share) and which boot of an instance is its current one."""

import hmac
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import BooleanField, ExpressionWrapper, OuterRef, Q, Subquery
from django.utils import timezone

from instances.models import Instance
from teams.models import Team

from .models import Restore, RestoreDrill


def stale_after() -> timedelta:
    return timedelta(seconds=settings.BACKUP_STALE_AFTER)


def stale_backups_q(now: datetime | None = None, *, prefix: str = "") -> Q:
    """Instances that run, have owed heartbeats for longer than the threshold, and sent none since.
    `prefix="instance__"` filters teams. The one definition used by the list, home page, metrics and alerts."""
    cutoff = (now or timezone.now()) - stale_after()
    return Q(**{f"{prefix}state": Instance.State.RUNNING, f"{prefix}backups_expected_since__lt": cutoff}) & (
        Q(**{f"{prefix}last_backup_at__isnull": True}) | Q(**{f"{prefix}last_backup_at__lt": cutoff}))


def backup_stale_annotation(now: datetime | None = None, *, prefix: str = "") -> ExpressionWrapper:
    return ExpressionWrapper(stale_backups_q(now, prefix=prefix), output_field=BooleanField())


def is_current_boot(team: Team, boot: str | None) -> bool:
    current = Instance.objects.filter(team=team).values_list("boot_id", flat=True).first()
    return bool(boot and current) and hmac.compare_digest(boot.encode(), current.encode())


def backup_is_healthy(team: Team, now: datetime | None = None) -> bool:
    """A backup is healthy only if its heartbeat is fresh (Litestream pings it only when every database synced
    without error, so a sync error stops it) AND the team's last restore drill passed. The one definition the
    console, the metrics and the alerts share."""
    return _is_healthy(Instance.objects.filter(stale_backups_q(now), team=team).exists(), last_drill(team))


def _is_healthy(stale: bool, last: RestoreDrill | None) -> bool:
    return not stale and last is not None and last.passed


def running_teams_backup_health(now: datetime | None = None) -> dict[Team, bool]:
    """`backup_is_healthy` of every team with a running instance, in slug order, in two queries (the metrics)."""
    last = {drill.team_id: drill for drill in last_drills()}
    teams = Team.objects.filter(instance__state=Instance.State.RUNNING).annotate(
        stale=backup_stale_annotation(now, prefix="instance__")).order_by("slug")
    return {team: _is_healthy(team.stale, last.get(team.pk)) for team in teams}


def last_drill(team: Team) -> RestoreDrill | None:
    return RestoreDrill.objects.filter(team=team).order_by("-started_at").first()


def last_drills() -> list[RestoreDrill]:
    """Each team's last restore drill (one query), team loaded."""
    latest = RestoreDrill.objects.filter(team=OuterRef("team")).order_by("-started_at").values("pk")[:1]
    return list(RestoreDrill.objects.filter(pk=Subquery(latest)).select_related("team").order_by("team__slug"))


def drill_coverage(now: datetime | None = None) -> tuple[int, int]:
    """(running teams drilled within CLOUDCTL_DRILL_PERIOD, running teams)."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.DRILL_PERIOD)
    running = Team.objects.filter(instance__state=Instance.State.RUNNING)
    return running.filter(restore_drills__started_at__gte=cutoff).distinct().count(), running.count()


# The largest id a database's bigint holds: a larger one (from a URL) names no restore rather than overflowing
# the query.
MAX_ID = 2**63 - 1


def team_restores(team: Team) -> list[tuple[Restore, list[str]]]:
    """The team's restores, newest first, each with the changes its state allows (`offered_restore_changes`)."""
    return [(restore, offered_restore_changes(restore)) for restore in Restore.objects.filter(team=team)]


def team_restore(team: Team, restore_id: int) -> Restore | None:
    """The team's restore `restore_id`, or None: another team's restore is none of this team's."""
    if not 0 < restore_id <= MAX_ID:
        return None
    return Restore.objects.select_related("team").filter(team=team, pk=restore_id).first()


def offered_restore_changes(restore: Restore) -> list[str]:
    """What a person may ask of the restore in its state, as `backups.restore_requests` names it
    (confirm_swap, request_swap_back, cancel_restore); the request still refuses what changed meanwhile (a later
    swap, another restore in progress)."""
    if restore.state == Restore.State.PREVIEW_RUNNING:
        return ["confirm_swap", "cancel"]
    if restore.state in Restore.BEFORE_SWAP:
        return ["cancel"]
    if restore.state == Restore.State.SWAPPED and restore.volumes_deleted_at is None:
        return ["swap_back"]
    return []
