"""Point-in-time restores of a team's database for its owners and admins (issue 16): the restorable window, the
team's restores, a restore's preview, and asking for a restore, its swap, its swap back or its cancellation.

Each checks the actor's role in the team first (no membership: NotAMember, a 404; a member or viewer:
PermissionDenied, a 403), then calls `backups` as `member:<username>` (services.actor_name): a string actor,
which `teams.permissions.authorize` lets through, so the role checked here is what allows it. A restore is only
ever looked up among the team's own (`restore_of`)."""

from datetime import datetime

from django.core.exceptions import PermissionDenied

from backups import preview as restore_preview
from backups import restore_requests
from backups.models import Restore
from backups.restore import plan_restore
from backups.selectors import team_restore, team_restores
from backups.window import RestorableWindow, RestorePlan
from teams.models import Membership, Team

from .errors import NotAMember
from .services import actor_name


def restorable_window(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                      actor) -> tuple[RestorableWindow, RestorePlan]:
    """The replica's window and what a restore to the point would restore (`backups.restore.plan_restore`, with
    its exceptions); the read-only credentials it mints are recorded for the member."""
    return plan_restore(team, database=database, timestamp=timestamp, txid=txid, actor=_restorer(team, actor))


def restores_of(team: Team, *, actor) -> list[tuple[Restore, list[str]]]:
    _restorer(team, actor)
    return team_restores(team)


def restore_of(team: Team, restore_id: int, *, actor) -> Restore:
    """The team's restore `restore_id`: NotAMember for any other (another team's included)."""
    _restorer(team, actor)
    restore = team_restore(team, restore_id)
    if restore is None:
        raise NotAMember(restore_id)
    return restore


def preview(restore: Restore, *, actor) -> list[restore_preview.PreviewTable]:
    """The restore's preview: its tables, counts and first rows (`backups.preview.preview_tables`, which raises
    PreviewUnavailable)."""
    _restorer(restore.team, actor)
    return restore_preview.preview_tables(restore)


def request_restore(team: Team, *, database: str, timestamp: datetime | None = None, txid: int | None = None,
                    actor) -> Restore:
    return restore_requests.request_restore(team, database=database, timestamp=timestamp, txid=txid,
                                            actor=_restorer(team, actor))


def confirm_swap(restore: Restore, *, actor) -> Restore:
    return restore_requests.confirm_swap(restore, actor=_restorer(restore.team, actor))


def swap_back(restore: Restore, *, actor) -> Restore:
    return restore_requests.request_swap_back(restore, actor=_restorer(restore.team, actor))


def cancel(restore: Restore, *, actor) -> Restore:
    return restore_requests.cancel_restore(restore, actor=_restorer(restore.team, actor))


# A change a person asks of a restore, by the name the pages' and the API's URLs give it.
CHANGES = {"confirm_swap": confirm_swap, "swap_back": swap_back, "cancel": cancel}


def _restorer(team: Team, actor) -> str:
    """How `actor` is named to backups, once their role in `team` (read now) lets them restore it."""
    membership = Membership.objects.filter(team=team, user_id=actor.pk).first() if actor.is_authenticated else None
    if membership is None:
        raise NotAMember(team.slug)
    if not membership.has_role_at_least(Membership.Role.ADMIN):
        raise PermissionDenied(f"Only owners and admins may restore the team's database; you are "
                               f"{membership.get_role_display().lower()} of {team.slug}.")
    return actor_name(actor)
