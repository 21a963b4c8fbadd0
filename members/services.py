"""What members do to their teams: create one, invite, accept, change roles, remove, leave, transfer ownership.

Pages and JSON endpoints call these and nothing else writes memberships or invitations. Each takes the acting
user as keyword-only `actor` and checks the team's rules itself (docs/sso.md, "The roles"):

- owners and admins manage members (invite, resend, revoke, change roles, remove); members and viewers only see;
- only owners make or demote owners, change or remove an owner, invite an owner, or transfer ownership;
- a team always keeps an owner: the last one cannot leave, be removed or be demoted.

Every change is recorded on the team's timeline as `member:<username>`: members act through their role, not
through the staff permissions (`teams.permissions`), so `teams.services.create_team` is asked as that process.
Each change locks the team's row first, so two owners demoting each other at once cannot leave it without one.
"""

import secrets
from datetime import timedelta
from urllib.parse import urlencode

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from instances.services import create_team_and_provision
from teams import timeline
from teams.models import Membership, Team

from .errors import Conflict, InvalidInvitation, NotAMember, TooManyInvitations
from .models import Invitation
from .selectors import invitations_mailed_by, teams_created_by

Role = Membership.Role
INVITATION_LIFETIME = timedelta(days=7)


def actor_name(user) -> str:
    """How a member's changes are recorded (the timeline's `actor`)."""
    return f"member:{user.get_username()}"


def parse_role(value) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise ValidationError({"role": f"{value!r} is not a role: one of {', '.join(Role.values)}."}) from None


def create_team(slug: str, name: str = "", region: str = "", *, actor) -> Team:
    """A team made by a member, who becomes its owner; its provisioning is queued. Checked as
    `teams.services.create_team` checks (ValidationError per field), and at most CLOUDCTL_MAX_TEAMS_PER_USER per
    account (a team is a machine, a volume and backups)."""
    with transaction.atomic():
        # One account's creations one at a time, so two at once cannot both pass the cap.
        get_user_model().objects.select_for_update().filter(pk=actor.pk).first()
        if teams_created_by(actor) >= settings.MAX_TEAMS_PER_USER:
            raise Conflict(f"You have created {settings.MAX_TEAMS_PER_USER} teams, the most one account may "
                           "(CLOUDCTL_MAX_TEAMS_PER_USER).", code="team_limit")
        team = create_team_and_provision(slug, name, region, actor=actor_name(actor))
        Membership.objects.create(team=team, user=actor, role=Role.OWNER)
        timeline.record(team, timeline.Kind.MEMBER_ADDED, f"{_shown(actor)} created the team, as its owner",
                        actor=actor_name(actor), data={"user": actor.pk, "role": Role.OWNER,
                                                       "created_by": actor.pk})
    return team


def invite(team: Team, email: str, role, *, actor) -> Invitation:
    """Invite `email` to `team` as `role`: a single-use link, valid INVITATION_LIFETIME, is mailed to it."""
    email = _clean_email(email)
    role = parse_role(role)
    key = secrets.token_urlsafe(32)
    with transaction.atomic():
        acting = _acting(team, actor)
        _require(acting, Role.ADMIN, "invite members")
        if role == Role.OWNER:
            _require(acting, Role.OWNER, "invite an owner")
        if EmailAddress.objects.filter(email__iexact=email, user__team_memberships__team=team).exists():
            raise Conflict({"email": f"{email} is already a member of {team.slug}."}, code="already_member")
        now = timezone.now()
        if Invitation.objects.filter(team=team, email__iexact=email, accepted_at=None, revoked_at=None,
                                     expires_at__gt=now).exists():
            raise Conflict({"email": f"{email} is already invited to {team.slug}: resend that invitation."},
                           code="already_invited")
        _within_mail_allowance(actor, now)
        invitation = Invitation.objects.create(team=team, email=email, role=role, key_hash=Invitation.hash_key(key),
                                               invited_by=actor, sent_at=now, expires_at=now + INVITATION_LIFETIME)
        timeline.record(team, timeline.Kind.INVITATION_SENT, f"{email} invited as {role.label.lower()}",
                        actor=actor_name(actor), data={"invitation": invitation.pk, "role": role,
                                                       "mailed_by": actor.pk})
    _mail_invitation(invitation, key, actor)
    return invitation


def resend_invitation(invitation: Invitation, *, actor) -> Invitation:
    """Mail a new link (the old one stops working) valid INVITATION_LIFETIME from now; an expired invitation
    may be resent, an accepted or revoked one may not."""
    key = secrets.token_urlsafe(32)
    with transaction.atomic():
        invitation = _open_invitation(invitation, actor)
        now = timezone.now()
        _within_mail_allowance(actor, now)
        invitation.key_hash = Invitation.hash_key(key)
        invitation.sent_at, invitation.expires_at = now, now + INVITATION_LIFETIME
        invitation.save(update_fields=["key_hash", "sent_at", "expires_at"])
        timeline.record(invitation.team, timeline.Kind.INVITATION_RESENT, f"invitation of {invitation.email} resent",
                        actor=actor_name(actor), data={"invitation": invitation.pk, "mailed_by": actor.pk})
    _mail_invitation(invitation, key, actor)
    return invitation


def revoke_invitation(invitation: Invitation, *, actor) -> Invitation:
    with transaction.atomic():
        invitation = _open_invitation(invitation, actor)
        invitation.revoked_at = timezone.now()
        invitation.save(update_fields=["revoked_at"])
        timeline.record(invitation.team, timeline.Kind.INVITATION_REVOKED,
                        f"invitation of {invitation.email} revoked", actor=actor_name(actor),
                        data={"invitation": invitation.pk})
    return invitation


def accept_invitation(key: str, *, actor) -> Membership:
    """Join the team an invitation link names, with its role. The accepting account must own the invited
    address: one of its verified email addresses (allauth's `EmailAddress`)."""
    with transaction.atomic():
        key_hash = Invitation.hash_key(key)
        invitation = Invitation.objects.select_related("team").filter(key_hash=key_hash).first()
        if invitation is not None:
            # Read again under the team's lock, which every change to its invitations holds (a resend may have
            # just replaced this key).
            _lock(invitation.team)
            invitation = Invitation.objects.select_related("team").filter(pk=invitation.pk, key_hash=key_hash).first()
        if invitation is None or not invitation.is_pending(timezone.now()):
            raise InvalidInvitation("This invitation link is not valid: it was used, revoked or replaced by a newer "
                                    "one, or it has expired. Ask the team for a new one.", code="invalid_invitation")
        if not EmailAddress.objects.filter(user=actor, email__iexact=invitation.email, verified=True).exists():
            raise PermissionDenied(f"This invitation was sent to {invitation.email}, which is not a verified address "
                                   "of your account: sign in with that account, or add the address to yours and "
                                   "confirm it.")
        team = invitation.team
        if Membership.objects.filter(team=team, user=actor).exists():
            raise Conflict(f"You are already a member of {team.slug}.", code="already_member")
        membership = Membership.objects.create(team=team, user=actor, role=invitation.role)
        invitation.accepted_at, invitation.accepted_by = timezone.now(), actor
        invitation.save(update_fields=["accepted_at", "accepted_by"])
        timeline.record(team, timeline.Kind.INVITATION_ACCEPTED,
                        f"{_shown(actor)} joined as {membership.get_role_display().lower()} (invited as "
                        f"{invitation.email})", actor=actor_name(actor),
                        data={"invitation": invitation.pk, "user": actor.pk, "role": invitation.role})
    return membership


def change_role(membership: Membership, role, *, actor) -> Membership:
    role = parse_role(role)
    with transaction.atomic():
        acting = _acting(membership.team, actor)
        membership = _current(membership)
        _require(acting, Role.ADMIN, "change roles")
        if Role.OWNER in (membership.role, role):
            _require(acting, Role.OWNER, "make or demote owners")
        if membership.role == role:
            return membership
        if membership.role == Role.OWNER:
            _keep_an_owner(membership.team, "be demoted")
        previous, membership.role = membership.role, role
        membership.save(update_fields=["role", "updated_at"])
        timeline.record(membership.team, timeline.Kind.MEMBER_ROLE_CHANGED,
                        f"{_shown(membership.user)}: {previous} -> {role}", actor=actor_name(actor),
                        data={"user": membership.user_id, "from": previous, "to": role})
    return membership


def remove_member(membership: Membership, *, actor) -> None:
    """Remove a member (removing oneself is leaving: `leave_team`'s rules)."""
    if membership.user_id == actor.pk:
        return leave_team(membership.team, actor=actor)
    with transaction.atomic():
        acting = _acting(membership.team, actor)
        membership = _current(membership)
        _require(acting, Role.ADMIN, "remove members")
        if membership.role == Role.OWNER:
            _require(acting, Role.OWNER, "remove an owner")
        membership.delete()
        timeline.record(membership.team, timeline.Kind.MEMBER_REMOVED, f"{_shown(membership.user)} removed",
                        actor=actor_name(actor), data={"user": membership.user_id, "role": membership.role})


def leave_team(team: Team, *, actor) -> None:
    with transaction.atomic():
        membership = _acting(team, actor)
        if membership.role == Role.OWNER:
            _keep_an_owner(team, "leave")
        membership.delete()
        timeline.record(team, timeline.Kind.MEMBER_REMOVED, f"{_shown(actor)} left", actor=actor_name(actor),
                        data={"user": actor.pk, "role": membership.role, "left": True})


def transfer_ownership(team: Team, new_owner: Membership, *, actor) -> Membership:
    """Make `new_owner` (a member) an owner and the acting owner an admin."""
    with transaction.atomic():
        acting = _acting(team, actor)
        new_owner = _current(new_owner)
        _require(acting, Role.OWNER, "transfer ownership")
        if new_owner.team_id != team.pk:
            raise NotAMember(new_owner.user_id)
        if new_owner.pk == acting.pk:
            raise ValidationError({"user": "You own the team already: choose another member."})
        previous, new_owner.role = new_owner.role, Role.OWNER
        new_owner.save(update_fields=["role", "updated_at"])
        acting.role = Role.ADMIN
        acting.save(update_fields=["role", "updated_at"])
        timeline.record(team, timeline.Kind.OWNERSHIP_TRANSFERRED,
                        f"ownership transferred from {_shown(actor)} to {_shown(new_owner.user)}",
                        actor=actor_name(actor),
                        data={"from": actor.pk, "to": new_owner.user_id, "previous_role": previous})
    return new_owner


def _lock(team: Team) -> Team:
    """The team's row, locked until the transaction ends: every membership change of a team waits for the others."""
    return Team.objects.select_for_update().get(pk=team.pk)


def _acting(team: Team, actor) -> Membership:
    """Lock the team; the actor's membership as it is now (NotAMember if none)."""
    _lock(team)
    membership = Membership.objects.select_related("team").filter(team=team, user_id=actor.pk).first()
    if membership is None:
        raise NotAMember(team.slug)
    return membership


def _current(membership: Membership) -> Membership:
    """`membership` as it is now, under the team's lock (NotAMember once gone)."""
    current = Membership.objects.select_related("team", "user").filter(pk=membership.pk).first()
    if current is None:
        raise NotAMember(membership.user_id)
    return current


def _require(acting: Membership, role: Role, what: str) -> None:
    if not acting.has_role_at_least(role):
        who = "owners" if role == Role.OWNER else "owners and admins"
        raise PermissionDenied(f"Only {who} may {what}; you are {acting.get_role_display().lower()} of "
                               f"{acting.team.slug}.")


def _keep_an_owner(team: Team, what: str) -> None:
    if Membership.objects.filter(team=team, role=Role.OWNER).count() <= 1:
        raise Conflict(f"The last owner of {team.slug} cannot {what}: make another member an owner first (or "
                       "transfer ownership).", code="last_owner")


def _within_mail_allowance(actor, now) -> None:
    """The control plane mails whatever address a member types: one account sends at most
    CLOUDCTL_INVITATIONS_PER_HOUR invitations (sends and resends) an hour, across its teams."""
    if invitations_mailed_by(actor, since=now - timedelta(hours=1)) >= settings.INVITATIONS_PER_HOUR:
        raise TooManyInvitations(f"You sent {settings.INVITATIONS_PER_HOUR} invitations within the hour, the most "
                                 "one account may (CLOUDCTL_INVITATIONS_PER_HOUR): try again later.",
                                 code="too_many_invitations")


def _open_invitation(invitation: Invitation, actor) -> Invitation:
    """The invitation under the team's lock, once the actor may manage it (an owner's only by owners)."""
    acting = _acting(invitation.team, actor)
    _require(acting, Role.ADMIN, "manage invitations")
    invitation = Invitation.objects.select_related("team").get(pk=invitation.pk)
    if invitation.role == Role.OWNER:
        _require(acting, Role.OWNER, "manage an owner's invitation")
    if invitation.accepted_at or invitation.revoked_at:
        raise Conflict("This invitation was already accepted or revoked.", code="invitation_closed")
    return invitation


def _clean_email(email) -> str:
    email = str(email or "").strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": f"{email!r} is not an email address."}) from None
    return email


def _shown(user) -> str:
    return user.email or user.get_username()


def _mail_invitation(invitation: Invitation, key: str, actor) -> None:
    """The link goes to the invited address only (never to the inviter or a page): whoever holds it may accept,
    provided their account has verified that address."""
    link = f"{settings.PUBLIC_URL}{reverse('members:invitation')}?{urlencode({'key': key})}"
    context = {"invitation": invitation, "team": invitation.team, "link": link, "inviter": _shown(actor),
               "expires_at": invitation.expires_at}
    send_mail(render_to_string("members/email/invitation_subject.txt", context).strip(),
              render_to_string("members/email/invitation_message.txt", context),
              settings.DEFAULT_FROM_EMAIL, [invitation.email])
