import pytest

from credentials.models import CredentialEvent
from teams.models import Team
from teams.tokens import InvalidToken, team_token, verify_team_token



def test_admin_rotate_action_revokes_tokens(admin_client, make_team):
    team = make_team()
    old = team_token(team)
    response = admin_client.post("/admin/teams/team/", {"action": "rotate_tokens", "_selected_action": [team.pk]})
    assert response.status_code == 302
    with pytest.raises(InvalidToken):
        verify_team_token(old)


def test_admin_disable_action(admin_client, make_team):
    team = make_team()
    admin_client.post("/admin/teams/team/", {"action": "disable", "_selected_action": [team.pk]})
    team.refresh_from_db()
    assert team.status == Team.Status.DISABLED


def test_audit_trail_is_read_only(admin_client, make_team):
    event = CredentialEvent.objects.create(kind="refused", reason="malformed")
    assert admin_client.get(f"/admin/credentials/credentialevent/{event.pk}/change/").status_code == 200
    assert admin_client.post(f"/admin/credentials/credentialevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/credentials/credentialevent/add/").status_code == 403
    assert CredentialEvent.objects.filter(pk=event.pk).exists()


def test_admin_refuses_anonymous_and_non_staff(client, django_user_model):
    assert client.get("/admin/teams/team/").status_code == 302
    user = django_user_model.objects.create_user("someone", password="pw-123456789")
    client.force_login(user)
    response = client.get("/admin/teams/team/")
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_adding_a_team_in_the_admin_queues_its_provisioning(admin_client, django_capture_on_commit_callbacks):
    from django_tasks_db.models import DBTaskResult

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/teams/team/add/", {"slug": "newsroom", "name": "Newsroom",
                                                                "status": "active"})
    assert response.status_code == 302
    team = Team.objects.get(slug="newsroom")
    assert DBTaskResult.objects.get().args_kwargs["args"] == [team.pk]


def test_team_list_shows_instance_state_and_url(admin_client, make_team):
    from instances.models import Instance

    team = make_team()
    Instance.objects.create(team=team, backend="x", state=Instance.State.RUNNING, url="http://127.0.0.1:9999/")
    page = admin_client.get("/admin/teams/team/").content.decode()
    assert "Running" in page and "http://127.0.0.1:9999/" in page
    assert f'href="{team.subdomain_url}"' in page  # the link is the router's


def test_the_admin_refuses_a_reserved_slug(admin_client):
    response = admin_client.post("/admin/teams/team/add/", {"slug": "admin", "name": "Sneaky", "status": "active"})
    assert response.status_code == 200
    assert "is reserved" in response.content.decode()
    assert not Team.objects.exists()
