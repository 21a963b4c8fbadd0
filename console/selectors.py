"""Read-side queries for the dashboard and the metrics (which team list, fleet counts, a team's timeline merged
with its credential events): each a constant number of SQL statements. They read several apps, so they live
above them, in the console."""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet

from backups.selectors import backup_stale_annotation, drill_coverage, last_drills, stale_backups_q
from credentials.models import CredentialEvent
from instances.models import Instance
from teams.models import Team, TeamEvent

TIMELINE_LENGTH = 60


def team_list(*, q: str = "", status: str = "", state: str = "", image: str = "", backup: str = "",
              now: datetime | None = None) -> QuerySet:
    """Teams with their instance in one statement (a LEFT JOIN), each flagged `backup_stale`."""
    teams = Team.objects.select_related("instance").annotate(
        backup_stale=backup_stale_annotation(now, prefix="instance__")).order_by("slug")
    if q:
        teams = teams.filter(Q(slug__icontains=q) | Q(name__icontains=q))
    if status:
        teams = teams.filter(status=status)
    if state:
        teams = teams.filter(instance__state=state)
    if image:
        teams = teams.filter(instance__image=image)
    if backup == "stale":
        teams = teams.filter(stale_backups_q(now, prefix="instance__"))
    elif backup == "fresh":
        teams = teams.filter(instance__last_backup_at__isnull=False).exclude(stale_backups_q(now, prefix="instance__"))
    elif backup == "never":
        teams = teams.filter(Q(instance__isnull=True) | Q(instance__last_backup_at__isnull=True))
    return teams


def images_in_use() -> list[str]:
    return list(Instance.objects.exclude(image="").order_by("image").values_list("image", flat=True).distinct())


@dataclass(frozen=True)
class FleetSummary:
    teams_by_status: dict[str, int]
    instances_by_state: dict[str, int]
    stale_backups: int
    # Restore drills: running teams drilled within CLOUDCTL_DRILL_PERIOD, running teams, teams whose last failed.
    drilled_teams: int
    running_teams: int
    failed_drills: int


def fleet_summary(now: datetime | None = None) -> FleetSummary:
    by_status = dict(Team.objects.order_by().values_list("status").annotate(n=Count("pk")))
    by_state = dict(Instance.objects.order_by().values_list("state").annotate(n=Count("pk")))
    stale = Instance.objects.filter(stale_backups_q(now)).count()
    drilled, running = drill_coverage(now)
    return FleetSummary(
        teams_by_status={status: by_status.get(status, 0) for status in Team.Status.values},
        instances_by_state={state: by_state.get(state, 0) for state in Instance.State.values},
        stale_backups=stale, drilled_teams=drilled, running_teams=running,
        failed_drills=sum(not drill.passed for drill in last_drills()),
    )


# The actor of a credential audit row: the private API recorded the request, whoever sent it.
AUDIT_ACTOR = "private API"


@dataclass(frozen=True)
class TimelineEntry:
    time: datetime
    kind: str
    message: str
    is_error: bool
    actor: str


def _credential_entry(event: CredentialEvent) -> TimelineEntry:
    if event.kind == CredentialEvent.Kind.ISSUED:
        return TimelineEntry(event.created_at, "credentials:issued",
                             f"credentials issued ({event.access_key_id}, {event.response_format}, "
                             f"from {event.client_ip or '?'})", False, AUDIT_ACTOR)
    if event.kind == CredentialEvent.Kind.READ_ONLY:
        return TimelineEntry(event.created_at, "credentials:read_only",
                             f"read-only credentials minted to read the replica ({event.access_key_id})", False,
                             event.actor)
    what = f"{event.signal} signal" if event.signal else "credentials"
    # A request that only named the team (an unverified token or signal URL) may come from anyone.
    unverified = ", unverified: it only claimed to be this team" if event.team_id is None else ""
    times = f" x{event.request_count} that minute" if event.request_count > 1 else ""
    return TimelineEntry(event.created_at, f"{what}:refused".replace(" ", "_"),
                         f"{what} refused{times}: {event.get_reason_display()} "
                         f"(from {event.client_ip or '?'}{unverified})", True, AUDIT_ACTOR)


def timeline(team: Team, length: int = TIMELINE_LENGTH) -> list[TimelineEntry]:
    """The team's events and its credential/signal audit rows, newest first, each with who acted. Messages never
    hold a secret: signal URLs a log tail may carry were redacted when the event was stored (`RedactedTextField`)."""
    events = [TimelineEntry(event.created_at, event.kind, event.message, event.is_error, event.actor)
              for event in TeamEvent.objects.filter(team=team)[:length]]
    audit = [_credential_entry(event) for rows in (CredentialEvent.objects.filter(team=team),
                                                   CredentialEvent.objects.filter(claimed_team_id=team.pk))
             for event in rows[:length]]
    return sorted(events + audit, key=lambda entry: entry.time, reverse=True)[:length]
