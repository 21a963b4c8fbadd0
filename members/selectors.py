"""What members' pages and JSON endpoints read: a user's teams, a team's members and invitations. Lookups that
name a team, member or invitation the user may not see raise `NotAMember` (a 404)."""

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.utils import timezone

from instances.selectors import instance_status
from teams.models import Membership, Team, TeamEvent

from .errors import NotAMember
from .models import Invitation


def memberships_of(user) -> QuerySet:
    """The user's teams (each with its instance, one JOIN), as memberships carrying the role."""
    return Membership.objects.filter(user=user).select_related("team", "team__instance").order_by("team__slug")


def membership_in(user, slug: str) -> Membership:
    """The user's membership of the team `slug`: NotAMember when there is none (or no such team)."""
    if not user.is_authenticated:
        raise NotAMember(slug)
    membership = Membership.objects.select_related("team", "team__instance").filter(
        user=user, team__slug=slug).first()
    if membership is None:
        raise NotAMember(slug)
    return membership


def members_of(team: Team) -> QuerySet:
    return Membership.objects.filter(team=team).select_related("user").order_by("user__email", "user__username")


# The largest id a database's bigint holds: a larger one (from a URL or a body) names nothing, rather than
# overflowing the query.
MAX_ID = 2**63 - 1


def _id(value) -> int:
    if not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise NotAMember(value)
    return value


def member_of(team: Team, user_id) -> Membership:
    """The membership of user `user_id` in `team`: NotAMember when that user is not one of its members."""
    user_id = _id(user_id)
    membership = Membership.objects.select_related("user", "team").filter(team=team, user_id=user_id).first()
    if membership is None:
        raise NotAMember(user_id)
    return membership


def open_invitations(team: Team) -> QuerySet:
    """Invitations neither accepted nor revoked, newest first; expired ones too, so they can be resent."""
    return Invitation.objects.filter(team=team, accepted_at=None, revoked_at=None).select_related(
        "invited_by").order_by("-sent_at")


def invitation_of(team: Team, invitation_id) -> Invitation:
    invitation_id = _id(invitation_id)
    invitation = Invitation.objects.select_related("team").filter(team=team, pk=invitation_id).first()
    if invitation is None:
        raise NotAMember(invitation_id)
    return invitation


def invitation_for_key(key: str) -> Invitation | None:
    """The invitation a link's key opens, if it still may be accepted (pending, not expired), else None."""
    invitation = Invitation.objects.select_related("team").filter(key_hash=Invitation.hash_key(key)).first()
    return invitation if invitation and invitation.is_pending(timezone.now()) else None


def teams_created_by(user) -> int:
    """How many teams `user` created on the members' side (`services.create_team` records it on the timeline)."""
    return TeamEvent.objects.filter(kind=TeamEvent.Kind.MEMBER_ADDED, data__created_by=user.pk).count()


def invitations_visible_to(membership: Membership) -> QuerySet:
    """The team's open invitations, for those who manage members (owners, admins): PermissionDenied otherwise."""
    if not membership.has_role_at_least(Membership.Role.ADMIN):
        raise PermissionDenied("Only owners and admins see the team's invitations.")
    return open_invitations(membership.team)


# What members see of their instance's progress: the dashboard's reading (`instances.selectors.instance_status`)
# without what is the operators' (the instance's own address, raw errors from the platform).
MEMBER_STATUS_FIELDS = ("team", "state", "state_display", "desired_state", "completed_steps", "last_backup_at")
MEMBER_ACTION_FIELDS = ("id", "kind", "status", "done")


def team_status(team: Team) -> dict:
    status = instance_status(team)
    return {**{field: status[field] for field in MEMBER_STATUS_FIELDS},
            "actions": [{field: action[field] for field in MEMBER_ACTION_FIELDS} for action in status["actions"]]}


def invitations_mailed_by(user, since) -> int:
    """How many invitations (sends and resends) `user` mailed since `since`, from the timeline."""
    return TeamEvent.objects.filter(kind__in=[TeamEvent.Kind.INVITATION_SENT, TeamEvent.Kind.INVITATION_RESENT],
                                    data__mailed_by=user.pk, created_at__gte=since).count()
