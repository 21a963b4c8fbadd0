"""Members' side (issue 14): teams created by members, the rules of roles (the last owner, admins and owners),
invitations (single use, expiry, resend, revoke, whose address), sign-up modes, the timeline, the pages."""

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client
from django.utils import timezone

from members import services
from members.errors import Conflict, InvalidInvitation, NotAMember, TooManyInvitations
from members.models import Invitation
from teams.models import Membership, TeamEvent

from .members import invitation_key, make_member
from .staff import PASSWORD, force_staff_login

pytestmark = pytest.mark.django_db

Role = Membership.Role


@pytest.fixture
def owner():
    return make_member("olivia@example.com")


@pytest.fixture
def team(owner):
    return services.create_team("acme", "Acme", actor=owner)


def join(team, email, role):
    """A member of `team` with `role` (through an owner's invitation, as members join)."""
    user = make_member(email)
    membership = Membership.objects.create(team=team, user=user, role=role)
    return membership


def role_of(team, user):
    return Membership.objects.get(team=team, user=user).role


def events(team, kind):
    return list(TeamEvent.objects.filter(team=team, kind=kind).order_by("id"))


# --- creating a team ------------------------------------------------------------------------------------------

def test_a_member_creates_a_team_and_owns_it_without_any_staff_permission(owner, django_capture_on_commit_callbacks):
    assert not owner.has_perm("teams.add_team")
    with django_capture_on_commit_callbacks() as queued:
        team = services.create_team("acme", "Acme", actor=owner)
    assert role_of(team, owner) == Role.OWNER
    assert team.region  # the default region, as teams.services.create_team picks it
    assert len(queued) == 1  # its provisioning, queued through instances.services
    [added] = events(team, TeamEvent.Kind.MEMBER_ADDED)
    assert added.actor == "member:olivia" and added.data["created_by"] == owner.pk


@pytest.mark.parametrize("slug, problem", [("Bad_Slug!", "lowercase"), ("admin", "reserved"), ("-x", "lowercase")])
def test_a_members_team_slug_is_checked_as_teams_services_checks_it(owner, slug, problem):
    with pytest.raises(ValidationError) as refused:
        services.create_team(slug, actor=owner)
    assert problem in " ".join(refused.value.message_dict["slug"])
    assert not Membership.objects.exists()


def test_a_taken_slug_is_refused(owner, team):
    with pytest.raises(ValidationError) as refused:
        services.create_team("acme", actor=make_member("bob@example.com"))
    assert "slug" in refused.value.message_dict


def test_each_account_creates_at_most_the_cap_of_teams(owner, settings):
    settings.MAX_TEAMS_PER_USER = 2
    services.create_team("one", actor=owner)
    services.create_team("two", actor=owner)
    with pytest.raises(Conflict, match="CLOUDCTL_MAX_TEAMS_PER_USER"):
        services.create_team("three", actor=owner)
    # Leaving or giving a team away does not lift the cap: it counts the teams created.
    assert services.create_team("three", actor=make_member("bob@example.com")).slug == "three"


# --- roles -------------------------------------------------------------------------------------------------------

def test_the_last_owner_can_neither_leave_nor_be_demoted_nor_removed(team, owner):
    with pytest.raises(Conflict, match="last owner"):
        services.leave_team(team, actor=owner)
    with pytest.raises(Conflict, match="last owner"):
        services.change_role(Membership.objects.get(team=team, user=owner), Role.ADMIN, actor=owner)
    with pytest.raises(Conflict, match="last owner"):
        services.remove_member(Membership.objects.get(team=team, user=owner), actor=owner)
    assert role_of(team, owner) == Role.OWNER
    # With a second owner, either may go.
    second = join(team, "sam@example.com", Role.OWNER)
    services.change_role(Membership.objects.get(team=team, user=owner), Role.ADMIN, actor=owner)
    assert role_of(team, owner) == Role.ADMIN
    with pytest.raises(Conflict, match="last owner"):
        services.leave_team(team, actor=second.user)


def test_admins_manage_members_but_not_owners(team, owner):
    admin = join(team, "ada@example.com", Role.ADMIN).user
    viewer = join(team, "vic@example.com", Role.VIEWER)
    services.change_role(viewer, Role.MEMBER, actor=admin)
    assert role_of(team, viewer.user) == Role.MEMBER
    services.change_role(viewer, Role.ADMIN, actor=admin)  # admins may make admins
    owner_membership = Membership.objects.get(team=team, user=owner)
    for refused in (lambda: services.change_role(owner_membership, Role.MEMBER, actor=admin),
                    lambda: services.remove_member(owner_membership, actor=admin),
                    lambda: services.change_role(viewer, Role.OWNER, actor=admin),
                    lambda: services.invite(team, "new@example.com", Role.OWNER, actor=admin),
                    lambda: services.transfer_ownership(team, viewer, actor=admin)):
        with pytest.raises(PermissionDenied, match="Only owners"):
            refused()
    assert role_of(team, owner) == Role.OWNER and role_of(team, viewer.user) == Role.ADMIN
    services.remove_member(viewer, actor=admin)
    assert not Membership.objects.filter(team=team, user=viewer.user).exists()


@pytest.mark.parametrize("role", [Role.MEMBER, Role.VIEWER])
def test_members_and_viewers_only_see(team, owner, role):
    acting = join(team, "mo@example.com", role).user
    other = join(team, "vi@example.com", Role.VIEWER)
    for refused in (lambda: services.invite(team, "new@example.com", Role.VIEWER, actor=acting),
                    lambda: services.change_role(other, Role.MEMBER, actor=acting),
                    lambda: services.remove_member(other, actor=acting)):
        with pytest.raises(PermissionDenied, match="Only owners and admins"):
            refused()
    # Anyone may leave.
    services.leave_team(team, actor=acting)
    assert not Membership.objects.filter(team=team, user=acting).exists()


def test_someone_outside_the_team_is_not_a_member(team, owner):
    stranger = make_member("eve@example.com")
    membership = Membership.objects.get(team=team, user=owner)
    for refused in (lambda: services.invite(team, "x@example.com", Role.VIEWER, actor=stranger),
                    lambda: services.change_role(membership, Role.VIEWER, actor=stranger),
                    lambda: services.remove_member(membership, actor=stranger),
                    lambda: services.leave_team(team, actor=stranger)):
        with pytest.raises(NotAMember):
            refused()


def test_an_unknown_role_is_refused(team, owner):
    member = join(team, "mo@example.com", Role.MEMBER)
    with pytest.raises(ValidationError, match="not a role"):
        services.change_role(member, "superuser", actor=owner)
    with pytest.raises(ValidationError, match="not a role"):
        services.invite(team, "x@example.com", "god", actor=owner)


def test_transferring_ownership_makes_the_owner_an_admin(team, owner):
    member = join(team, "mo@example.com", Role.MEMBER)
    services.transfer_ownership(team, member, actor=owner)
    assert role_of(team, member.user) == Role.OWNER and role_of(team, owner) == Role.ADMIN
    [event] = events(team, TeamEvent.Kind.OWNERSHIP_TRANSFERRED)
    assert event.actor == "member:olivia" and event.data["from"] == owner.pk and event.data["to"] == member.user_id
    # The former owner cannot take it back.
    with pytest.raises(PermissionDenied):
        services.transfer_ownership(team, Membership.objects.get(team=team, user=owner), actor=owner)


def test_every_change_is_on_the_timeline_with_its_actor(team, owner, mailoutbox):
    member = join(team, "mo@example.com", Role.MEMBER)
    services.change_role(member, Role.ADMIN, actor=owner)
    invitation = services.invite(team, "new@example.com", Role.VIEWER, actor=owner)
    services.resend_invitation(invitation, actor=owner)
    services.revoke_invitation(invitation, actor=owner)
    services.remove_member(member, actor=owner)
    kinds = TeamEvent.Kind
    recorded = {event.kind: event for event in TeamEvent.objects.filter(team=team)}
    for kind in (kinds.MEMBER_ADDED, kinds.MEMBER_ROLE_CHANGED, kinds.INVITATION_SENT, kinds.INVITATION_RESENT,
                 kinds.INVITATION_REVOKED, kinds.MEMBER_REMOVED):
        assert recorded[kind].actor == "member:olivia", kind
    assert recorded[kinds.MEMBER_ROLE_CHANGED].data == {"user": member.user_id, "from": "member", "to": "admin"}
    assert recorded[kinds.MEMBER_REMOVED].data["user"] == member.user_id


# --- invitations -------------------------------------------------------------------------------------------------

def test_an_invitation_is_mailed_and_only_its_hash_is_stored(team, owner, mailoutbox):
    invitation = services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    [message] = mailoutbox
    assert message.to == ["new@example.com"] and "acme" in message.subject
    key = invitation_key(message)
    assert len(key) >= 43
    stored = Invitation.objects.filter(pk=invitation.pk).values().get()
    assert key not in str(stored) and stored["key_hash"] == Invitation.hash_key(key)
    assert invitation.expires_at - invitation.sent_at == timedelta(days=7)


def test_accepting_joins_with_the_role_once(team, owner, mailoutbox):
    services.invite(team, "new@example.com", Role.ADMIN, actor=owner)
    key = invitation_key(mailoutbox[-1])
    newcomer = make_member("new@example.com")
    membership = services.accept_invitation(key, actor=newcomer)
    assert membership.role == Role.ADMIN and role_of(team, newcomer) == Role.ADMIN
    [accepted] = events(team, TeamEvent.Kind.INVITATION_ACCEPTED)
    assert accepted.actor == "member:new" and accepted.data["user"] == newcomer.pk
    with pytest.raises(InvalidInvitation):
        services.accept_invitation(key, actor=newcomer)
    # Nor may anyone else holding the used link (with that address verified too) join through it.
    other = make_member("other@example.com")
    EmailAddress.objects.create(user=other, email="NEW@example.com", verified=True)
    with pytest.raises(InvalidInvitation):
        services.accept_invitation(key, actor=other)


def test_an_expired_invitation_cannot_be_accepted_but_can_be_resent(team, owner, mailoutbox):
    invitation = services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    old_key = invitation_key(mailoutbox[-1])
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    newcomer = make_member("new@example.com")
    with pytest.raises(InvalidInvitation):
        services.accept_invitation(old_key, actor=newcomer)
    services.resend_invitation(invitation, actor=owner)
    new_key = invitation_key(mailoutbox[-1])
    assert new_key != old_key
    assert services.accept_invitation(new_key, actor=newcomer).role == Role.MEMBER


def test_resending_kills_the_old_link(team, owner, mailoutbox):
    invitation = services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    old_key = invitation_key(mailoutbox[-1])
    services.resend_invitation(invitation, actor=owner)
    assert len(mailoutbox) == 2 and mailoutbox[-1].to == ["new@example.com"]
    newcomer = make_member("new@example.com")
    with pytest.raises(InvalidInvitation):
        services.accept_invitation(old_key, actor=newcomer)
    services.accept_invitation(invitation_key(mailoutbox[-1]), actor=newcomer)


def test_a_revoked_invitation_cannot_be_accepted_nor_resent(team, owner, mailoutbox):
    invitation = services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    key = invitation_key(mailoutbox[-1])
    services.revoke_invitation(invitation, actor=owner)
    with pytest.raises(InvalidInvitation):
        services.accept_invitation(key, actor=make_member("new@example.com"))
    with pytest.raises(Conflict):
        services.resend_invitation(invitation, actor=owner)


def test_an_invitation_for_another_address_is_refused(team, owner, mailoutbox):
    services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    key = invitation_key(mailoutbox[-1])
    with pytest.raises(PermissionDenied, match="sent to new@example.com"):
        services.accept_invitation(key, actor=make_member("someone@example.com"))
    assert Membership.objects.filter(team=team).count() == 1
    # The invitation is still good for its address (case aside).
    assert services.accept_invitation(key, actor=make_member("New@Example.com")).role == Role.MEMBER


def test_an_unverified_address_is_not_enough(team, owner, mailoutbox):
    services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    key = invitation_key(mailoutbox[-1])
    unverified = make_member("new@example.com", verified=False)
    with pytest.raises(PermissionDenied, match="not a verified address"):
        services.accept_invitation(key, actor=unverified)
    # Nor is the bare `email` field of the account (an address nobody proved).
    bare = get_user_model().objects.create_user("bare", email="new@example.com", password=PASSWORD)
    with pytest.raises(PermissionDenied):
        services.accept_invitation(key, actor=bare)
    EmailAddress.objects.filter(user=unverified).update(verified=True)
    assert services.accept_invitation(key, actor=unverified).role == Role.MEMBER


def test_inviting_a_member_or_an_invited_address_again_is_a_conflict(team, owner, mailoutbox):
    join(team, "mo@example.com", Role.MEMBER)
    with pytest.raises(Conflict, match="already a member"):
        services.invite(team, "MO@example.com", Role.ADMIN, actor=owner)
    services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    with pytest.raises(Conflict, match="already invited"):
        services.invite(team, "new@example.com", Role.ADMIN, actor=owner)
    with pytest.raises(ValidationError, match="not an email"):
        services.invite(team, "not-an-address", Role.ADMIN, actor=owner)


def test_admins_do_not_manage_an_owners_invitation(team, owner, mailoutbox):
    admin = join(team, "ada@example.com", Role.ADMIN).user
    invitation = services.invite(team, "boss@example.com", Role.OWNER, actor=owner)
    with pytest.raises(PermissionDenied):
        services.resend_invitation(invitation, actor=admin)
    with pytest.raises(PermissionDenied):
        services.revoke_invitation(invitation, actor=admin)


# --- sign-up and sign-in -----------------------------------------------------------------------------------------

def sign_up(client, email, password="a-long-pass-phrase-42", **extra):
    return client.post("/accounts/signup/", {"email": email, "password1": password, "password2": password}, **extra)


def test_open_sign_up_asks_for_email_and_password_and_verifies_the_address(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    client = Client()
    page = client.get("/accounts/signup/").content.decode()
    assert 'name="email"' in page and 'name="username"' not in page
    response = sign_up(client, "new@example.com")
    assert response.status_code == 302 and "_auth_user_id" not in client.session
    user = get_user_model().objects.get(email="new@example.com")
    assert user.username and not EmailAddress.objects.get(user=user).verified
    [message] = mailoutbox
    assert message.to == ["new@example.com"]
    # No sign-in before the address is proven, by email or otherwise.
    signing_in = Client()
    response = signing_in.post("/accounts/login/", {"login": "new@example.com", "password": "a-long-pass-phrase-42"})
    assert "_auth_user_id" not in signing_in.session
    assert "/accounts/confirm-email/" in response["Location"]


def test_a_verified_member_signs_in_by_email_and_lands_on_their_teams(team):
    client = Client()
    response = client.post("/accounts/login/", {"login": "olivia@example.com", "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/teams/"
    assert client.get("/").url == "/teams/"
    page = client.get("/teams/").content.decode()
    assert "acme" in page and "Owner" in page and team.subdomain_url in page
    assert "Dashboard" not in page


def test_staff_see_the_dashboard_link_on_their_teams(client, django_user_model):
    operator = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    force_staff_login(client, operator)
    assert 'id="dashboard-link"' in client.get(client.get("/").url).content.decode()


def test_sign_up_by_invitation_only(settings, team, owner, mailoutbox):
    settings.SIGNUP_MODE = "invitation"
    assert "closed" in Client().get("/accounts/signup/").content.decode().lower()
    assert sign_up(Client(), "new@example.com").status_code != 302
    assert not get_user_model().objects.filter(email="new@example.com").exists()

    services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    key = invitation_key(mailoutbox[-1])
    client = Client()
    response = client.get(f"/invitation/?key={key}")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/signup/")
    # ...which links to sign in instead, and back here either way.
    back = urlencode({"next": f"/invitation/?key={key}"})
    assert f'href="/accounts/login/?{back}"' in client.get(response["Location"]).content.decode()
    # Another address than the invited one is refused.
    refused = sign_up(client, "other@example.com")
    assert refused.status_code == 200 and "invitation was sent to" in refused.content.decode()
    # The invited one signs up at once: the link came to that address, so it counts as verified.
    response = sign_up(client, "new@example.com", QUERY_STRING=urlencode({"next": f"/invitation/?key={key}"}))
    assert response.status_code == 302 and "_auth_user_id" in client.session
    assert response["Location"] == f"/invitation/?key={key}"  # back to the invitation
    newcomer = get_user_model().objects.get(email="new@example.com")
    assert EmailAddress.objects.get(user=newcomer).verified
    assert len(mailoutbox) == 1  # no verification mail
    accepted = client.post("/invitation/", {"key": key})
    assert accepted.status_code == 302 and accepted["Location"] == "/teams/acme/"
    assert role_of(team, newcomer) == Role.MEMBER


def test_an_unknown_signup_mode_fails_the_checks(settings):
    settings.SIGNUP_MODE = "everyone"
    with pytest.raises(SystemCheckError, match="cloudctl.E005"):
        call_command("check")


# --- pages -------------------------------------------------------------------------------------------------------

def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_team_page_shows_members_progress_and_what_the_role_allows(team, owner):
    viewer = join(team, "vic@example.com", Role.VIEWER).user
    page = signed_in(owner).get("/teams/acme/").content.decode()
    assert "vic@example.com" in page and 'id="invite"' in page and 'id="instance-state"' in page
    page = signed_in(viewer).get("/teams/acme/").content.decode()
    assert "olivia@example.com" in page and 'id="invite"' not in page and "Remove" not in page
    status = signed_in(viewer).get("/teams/acme/status.json").json()
    assert status["team"] == "acme" and "state" in status and "url" not in status and "last_error" not in status


def test_pages_of_another_team_are_404(team):
    stranger = signed_in(make_member("eve@example.com"))
    for path in ("/teams/acme/", "/teams/acme/status.json"):
        assert stranger.get(path).status_code == 404
    assert stranger.post("/teams/acme/invitations/", {"email": "x@example.com", "role": "viewer"}).status_code == 404
    assert Client().get("/teams/acme/").status_code == 302  # signed out: to sign in


def test_page_refusals_are_4xx_with_their_reason(team, owner):
    viewer = join(team, "vic@example.com", Role.VIEWER).user
    response = signed_in(viewer).post("/teams/acme/invitations/", {"email": "x@example.com", "role": "viewer"})
    assert response.status_code == 403 and "Only owners and admins" in response.content.decode()
    response = signed_in(owner).post("/teams/acme/leave/")
    assert response.status_code == 409 and "last owner" in response.content.decode()
    response = signed_in(owner).post("/teams/acme/invitations/", {"email": "nope", "role": "viewer"})
    assert response.status_code == 400
    response = signed_in(owner).post(f"/teams/acme/members/{viewer.pk}/role/", {"role": "emperor"})
    assert response.status_code == 400


def test_creating_a_team_on_the_page(owner, settings):
    client = signed_in(owner)
    response = client.post("/new-team/", {"slug": "beta", "name": "Beta"})
    assert response.status_code == 302 and response["Location"] == "/teams/beta/"
    assert client.post("/new-team/", {"slug": "Not A Slug"}).status_code == 400
    settings.MAX_TEAMS_PER_USER = 1
    refused = client.post("/new-team/", {"slug": "gamma"})
    assert refused.status_code == 409 and "CLOUDCTL_MAX_TEAMS_PER_USER" in refused.content.decode()


def test_the_invitation_page_accepts_and_refuses_clearly(team, owner, mailoutbox):
    services.invite(team, "new@example.com", Role.VIEWER, actor=owner)
    link = f"/invitation/?key={invitation_key(mailoutbox[-1])}"
    wrong = signed_in(make_member("wrong@example.com"))
    assert "Join acme" in wrong.get(link).content.decode()
    refused = wrong.post("/invitation/", {"key": invitation_key(mailoutbox[-1])})
    assert refused.status_code == 403 and "sent to new@example.com" in refused.content.decode()
    assert Client().get("/invitation/?key=made-up").status_code == 400


def test_the_profile_links_to_email_password_and_two_factor(owner):
    page = signed_in(owner).get("/profile/").content.decode()
    for path in ("/accounts/email/", "/accounts/password/change/", "/accounts/2fa/"):
        assert path in page


def test_the_mailed_link_verifies_the_address_and_then_the_member_signs_in(settings, mailoutbox):
    settings.SIGNUP_MODE = "open"
    sign_up(Client(), "new@example.com")
    link = re.search(r"http://testserver(/accounts/confirm-email/\S+/)", mailoutbox[-1].body).group(1)
    confirming = Client()
    assert confirming.get(link).status_code == 200
    confirming.post(link)
    assert EmailAddress.objects.get(email="new@example.com").verified
    client = Client()
    response = client.post("/accounts/login/", {"login": "new@example.com", "password": "a-long-pass-phrase-42"})
    assert response.status_code == 302 and response["Location"] == "/teams/" and "_auth_user_id" in client.session


def test_the_sign_in_page_offers_sign_up_and_a_password_reset():
    page = Client().get("/accounts/login/?next=/invitation/%3Fkey%3Dabc").content.decode()
    assert 'href="/accounts/password/reset/"' in page
    assert 'href="/accounts/signup/?next=%2Finvitation%2F%3Fkey%3Dabc"' in page


def test_leaving_on_the_page_goes_back_to_my_teams(team, owner):
    viewer = join(team, "vic@example.com", Role.VIEWER).user
    response = signed_in(viewer).post("/teams/acme/leave/")
    assert response.status_code == 302 and response["Location"] == "/teams/"
    assert not Membership.objects.filter(team=team, user=viewer).exists()


def test_the_admin_lists_invitations_without_their_key_hash(team, owner, admin_client, mailoutbox):
    invitation = services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    for path in ("/admin/members/invitation/", f"/admin/members/invitation/{invitation.pk}/change/"):
        response = admin_client.get(path)
        assert response.status_code == 200 and "new@example.com" in response.content.decode()
        assert invitation.key_hash not in response.content.decode()
    assert admin_client.get("/admin/teams/membership/").status_code == 200
    assert admin_client.get("/admin/members/invitation/add/").status_code == 403


def test_a_sign_up_without_next_lands_on_my_teams(settings, team, owner, mailoutbox):
    services.invite(team, "new@example.com", Role.MEMBER, actor=owner)
    client = Client()
    client.get(f"/invitation/?key={invitation_key(mailoutbox[-1])}")
    response = sign_up(client, "new@example.com")
    assert response.status_code == 302 and response["Location"] == "/teams/"


def test_one_account_mails_at_most_the_hourly_cap_of_invitations(settings, team, owner, mailoutbox):
    settings.INVITATIONS_PER_HOUR = 3
    first = services.invite(team, "a@example.com", Role.VIEWER, actor=owner)
    services.invite(team, "b@example.com", Role.VIEWER, actor=owner)
    services.resend_invitation(first, actor=owner)  # a resend mails too
    with pytest.raises(TooManyInvitations, match="CLOUDCTL_INVITATIONS_PER_HOUR"):
        services.invite(team, "c@example.com", Role.VIEWER, actor=owner)
    with pytest.raises(TooManyInvitations):
        services.resend_invitation(first, actor=owner)
    assert len(mailoutbox) == 3
    response = signed_in(owner).post("/teams/acme/invitations/", {"email": "c@example.com", "role": "viewer"})
    assert response.status_code == 429
    # An hour later the account may invite again; other accounts were never held back.
    TeamEvent.objects.filter(kind__startswith="invitation:").update(created_at=timezone.now() - timedelta(hours=1))
    services.invite(team, "c@example.com", Role.VIEWER, actor=owner)
