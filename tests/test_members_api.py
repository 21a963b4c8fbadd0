"""The members' JSON endpoints (/api/...): the pages' rules through the same services; session authentication
with Django's CSRF check; every refusal a JSON 4xx (issue 14)."""

import json

import pytest
from django.test import Client

from members import services
from members.models import Invitation
from teams.models import Membership, TeamEvent

from .members import invitation_key, make_member

pytestmark = pytest.mark.django_db

Role = Membership.Role


@pytest.fixture
def owner():
    return make_member("olivia@example.com")


@pytest.fixture
def team(owner):
    return services.create_team("acme", "Acme", actor=owner)


def api(user, *, csrf=False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def send(client, method, path, body=None, **extra):
    if method == "get":
        return client.get(path, **extra)
    data = body if isinstance(body, (str, bytes)) else json.dumps(body or {})
    return getattr(client, method)(path, data=data, content_type="application/json", **extra)


def join(team, email, role):
    user = make_member(email)
    Membership.objects.create(team=team, user=user, role=role)
    return user


def test_my_teams_and_a_team(team, owner):
    client = api(owner)
    assert client.get("/api/teams").json() == {"teams": [
        {"slug": "acme", "name": "Acme", "url": team.subdomain_url, "status": "active", "role": "owner"}]}
    detail = client.get("/api/teams/acme").json()
    assert detail["role"] == "owner" and detail["progress"]["team"] == "acme"


def test_creating_a_team(owner, settings):
    client = api(owner)
    response = send(client, "post", "/api/teams", {"slug": "beta", "name": "Beta"})
    assert response.status_code == 201 and response.json()["role"] == "owner"
    assert Membership.objects.get(team__slug="beta").user == owner
    assert send(client, "post", "/api/teams", {"slug": "beta"}).status_code == 400  # taken
    assert send(client, "post", "/api/teams", {"slug": "Not Valid"}).status_code == 400
    settings.MAX_TEAMS_PER_USER = 1
    refused = send(client, "post", "/api/teams", {"slug": "gamma"})
    assert refused.status_code == 409 and "CLOUDCTL_MAX_TEAMS_PER_USER" in refused.json()["error"]


def test_members_list_change_role_and_remove(team, owner):
    viewer = join(team, "vic@example.com", Role.VIEWER)
    client = api(owner)
    listed = client.get("/api/teams/acme/members").json()["members"]
    assert {(member["email"], member["role"]) for member in listed} == {
        ("olivia@example.com", "owner"), ("vic@example.com", "viewer")}
    changed = send(client, "patch", f"/api/teams/acme/members/{viewer.pk}", {"role": "admin"})
    assert changed.status_code == 200 and changed.json()["role"] == "admin"
    assert send(client, "delete", f"/api/teams/acme/members/{viewer.pk}").status_code == 200
    assert not Membership.objects.filter(user=viewer).exists()
    assert [event.actor for event in TeamEvent.objects.filter(kind__startswith="member:")] == ["member:olivia"] * 3


def test_invitations_create_list_resend_revoke_accept(team, owner, mailoutbox):
    client = api(owner)
    created = send(client, "post", "/api/teams/acme/invitations", {"email": "new@example.com", "role": "member"})
    assert created.status_code == 201
    body = created.json()
    assert body["email"] == "new@example.com" and "key" not in json.dumps(body).replace("key_hash", "")
    first_key = invitation_key(mailoutbox[-1])
    assert first_key not in created.content.decode()
    assert [i["id"] for i in client.get("/api/teams/acme/invitations").json()["invitations"]] == [body["id"]]
    assert send(client, "post", f"/api/teams/acme/invitations/{body['id']}/resend").status_code == 200
    key = invitation_key(mailoutbox[-1])
    newcomer = api(make_member("new@example.com"))
    assert send(newcomer, "post", "/api/invitations/accept", {"key": first_key}).status_code == 400
    accepted = send(newcomer, "post", "/api/invitations/accept", {"key": key})
    assert accepted.status_code == 200 and accepted.json()["role"] == "member"
    # Revoking another.
    other = send(client, "post", "/api/teams/acme/invitations", {"email": "x@example.com", "role": "viewer"}).json()
    assert send(client, "delete", f"/api/teams/acme/invitations/{other['id']}").status_code == 200
    assert Invitation.objects.get(pk=other["id"]).revoked_at is not None
    assert send(client, "delete", f"/api/teams/acme/invitations/{other['id']}").status_code == 409


def test_leave_and_transfer(team, owner):
    member = join(team, "mo@example.com", Role.MEMBER)
    client = api(owner)
    refused = send(client, "post", "/api/teams/acme/leave")
    assert refused.status_code == 409 and "last owner" in refused.json()["error"]
    moved = send(client, "post", "/api/teams/acme/transfer", {"user": member.pk})
    assert moved.status_code == 200 and moved.json()["role"] == "owner"
    assert send(client, "post", "/api/teams/acme/leave").status_code == 200
    assert list(Membership.objects.filter(team=team).values_list("user", "role")) == [(member.pk, "owner")]


@pytest.mark.parametrize("body, problem", [
    ("{not json", "not JSON"), ("[1, 2]", "JSON object"), ({}, "role"), ({"role": 7}, "role"),
    ({"role": "emperor"}, "not a role"), (b"\xff\xfe", "not JSON"),
])
def test_bad_input_is_a_clear_400(team, owner, body, problem):
    viewer = join(team, "vic@example.com", Role.VIEWER)
    response = send(api(owner), "patch", f"/api/teams/acme/members/{viewer.pk}", body)
    assert response.status_code == 400 and problem in response.json()["error"]


@pytest.mark.parametrize("body", [{}, {"email": "x@example.com"}, {"email": "nope", "role": "viewer"},
                                  {"email": ["x@example.com"], "role": "viewer"}, {"email": "x@example.com", "role": None}])
def test_a_bad_invitation_is_a_400(team, owner, body):
    response = send(api(owner), "post", "/api/teams/acme/invitations", body)
    assert response.status_code == 400 and response.json()["error"]


@pytest.mark.parametrize("body", [{}, {"user": "1"}, {"user": True}, {"user": 10**30}])
def test_a_bad_transfer_is_a_4xx(team, owner, body):
    response = send(api(owner), "post", "/api/teams/acme/transfer", body)
    assert response.status_code in (400, 404) and response.json()["error"]


def test_no_permission_is_403(team, owner):
    viewer = join(team, "vic@example.com", Role.VIEWER)
    client = api(viewer)
    assert client.get("/api/teams/acme/members").status_code == 200  # viewers see the list
    for method, path, body in [
        ("patch", f"/api/teams/acme/members/{owner.pk}", {"role": "viewer"}),
        ("delete", f"/api/teams/acme/members/{owner.pk}", None),
        ("post", "/api/teams/acme/invitations", {"email": "x@example.com", "role": "viewer"}),
        ("get", "/api/teams/acme/invitations", None),
        ("post", "/api/teams/acme/transfer", {"user": owner.pk}),
    ]:
        response = send(client, method, path, body)
        assert response.status_code == 403 and response.json()["error"], (method, path)


def test_another_team_is_404(team, owner):
    stranger = make_member("eve@example.com")
    services.create_team("other", actor=stranger)
    client = api(stranger)
    invitation = services.invite(team, "x@example.com", Role.VIEWER, actor=owner)
    for method, path, body in [
        ("get", "/api/teams/acme", None), ("get", "/api/teams/acme/members", None),
        ("patch", f"/api/teams/acme/members/{owner.pk}", {"role": "viewer"}),
        ("delete", f"/api/teams/acme/members/{owner.pk}", None),
        ("get", "/api/teams/acme/invitations", None),
        ("delete", f"/api/teams/acme/invitations/{invitation.pk}", None),
        ("post", f"/api/teams/acme/invitations/{invitation.pk}/resend", None),
        ("post", "/api/teams/acme/leave", None), ("get", "/api/teams/nosuchteam", None),
        # Its own team, with another team's member or invitation.
        ("patch", f"/api/teams/other/members/{owner.pk}", {"role": "viewer"}),
        ("delete", f"/api/teams/other/invitations/{invitation.pk}", None),
        # Ids no database holds.
        ("patch", f"/api/teams/other/members/{10**30}", {"role": "viewer"}),
        ("delete", f"/api/teams/other/invitations/{10**30}", None),
    ]:
        response = send(client, method, path, body)
        assert response.status_code == 404 and response.json()["error"], (method, path)
    assert Membership.objects.get(user=owner).role == "owner"
    assert Invitation.objects.get(pk=invitation.pk).revoked_at is None


def test_signed_out_is_401_and_a_wrong_method_405(team, owner):
    assert Client().get("/api/teams").status_code == 401
    assert send(Client(), "post", "/api/teams/acme/invitations", {"email": "x@example.com", "role": "viewer"}
                ).status_code == 401
    response = api(owner).put("/api/teams/acme/members", data="{}", content_type="application/json")
    assert response.status_code == 405 and "GET" in response.json()["error"]
    assert api(owner).get("/api/teams/acme/nothing-here").json() == {"error": "not found"}


def test_csrf_is_enforced_with_a_json_refusal(team, owner):
    client = api(owner, csrf=True)
    refused = send(client, "post", "/api/teams/acme/invitations", {"email": "x@example.com", "role": "viewer"})
    assert refused.status_code == 403 and "CSRF" in refused.json()["error"]
    assert not Invitation.objects.exists()
    client.get("/teams/acme/")  # a page sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = send(client, "post", "/api/teams/acme/invitations", {"email": "x@example.com", "role": "viewer"},
                    HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201
