"""Staff is not an authorization: every dashboard view, JSON endpoint, admin action and service checks a
permission, granted through the groups that migration 0007 ships; deploys accept only allowed images."""

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import URLPattern, get_resolver

from credentials.tokens import team_token, verify_team_token
from teams.dashboard import urls as dashboard_urls
from teams.models import Deployment, Team, TeamAction

pytestmark = pytest.mark.django_db
PASSWORD = "pw-123456789"


def dashboard_urls_for(team: Team, deployment: Deployment) -> list[str]:
    """Every URL of the dashboard's URL conf, its parameters filled in (every action kind for `kind`): a view
    added without a check makes the tests below fail."""
    values = {"slug": [team.slug], "pk": [str(deployment.pk)], "kind": [kind.value for kind in TeamAction.Kind]}
    urls = []
    for pattern in dashboard_urls.urlpatterns:
        assert isinstance(pattern, URLPattern), pattern
        route = f"/dashboard/{pattern.pattern}"
        names = re.findall(r"<(?:\w+:)?(\w+)>", route)
        assert set(names) <= set(values), route
        filled = [route]
        for name in names:
            filled = [re.sub(rf"<(?:\w+:)?{name}>", value, url) for url in filled for value in values[name]]
        urls += filled
    return urls


def is_json_endpoint(url: str) -> bool:
    return url.endswith(".json")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("permissionless", password=PASSWORD, is_staff=True)


def test_every_dashboard_url_is_refused_to_a_staff_user_without_permissions(client, staff, make_team):
    team = make_team("acme")
    deployment = Deployment.objects.create(image="registry.fly.io/cloudctl-team:v2", canary=0, concurrency=1,
                                           max_failures=0)
    old_token = team_token(team)
    client.force_login(staff)
    urls = dashboard_urls_for(team, deployment)
    assert len(urls) >= 17  # every action kind, every page, both JSON endpoints
    data = {"confirm": team.slug, "slug": "sneaky", "region": "ord", "image": "evil:1", "canary": 0,
            "concurrency": 1, "max_failures": 0}
    for url in urls:
        for response in (client.get(url), client.post(url, data)):
            assert response.status_code == 403, (url, response.request["REQUEST_METHOD"], response.status_code)
            if is_json_endpoint(url):
                assert response.json() == {"error": "permission denied"}, url
    assert not TeamAction.objects.exists()
    assert list(Team.objects.values_list("slug", flat=True)) == ["acme"]
    assert list(Deployment.objects.values_list("pk", flat=True)) == [deployment.pk]
    assert verify_team_token(old_token) == team  # not rotated


def grant(user, *codenames: str):
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*(Permission.objects.get(content_type__app_label=label, codename=codename)
                                for label, codename in (name.split(".") for name in codenames)))


def test_a_view_only_staff_user_sees_no_admin_action_and_cannot_post_one(client, staff, make_team):
    team = make_team("acme")
    grant(staff, "teams.view_team")
    client.force_login(staff)
    page = client.get("/admin/teams/team/")
    assert page.status_code == 200 and "acme" in page.content.decode()
    assert 'name="action"' not in page.content.decode()  # no action selector at all
    old_token = team_token(team)
    for action in ("disable", "enable", "rotate_tokens", "delete_selected"):
        client.post("/admin/teams/team/", {"action": action, "_selected_action": [team.pk]})
    team.refresh_from_db()
    assert team.status == Team.Status.ACTIVE and verify_team_token(old_token) == team


def test_an_image_outside_the_allowed_prefixes_is_refused_by_the_service(settings, make_team):
    from teams.deploys import DeploymentRefused, start_deployment

    settings.ALLOWED_IMAGE_PREFIXES = ["registry.fly.io/cloudctl-team:", "registry.example.com/ours/"]
    make_team("acme")
    for image in ("docker.io/evil:1", "registry.fly.io/cloudctl-team-evil:1", "registry.example.com/oursx/a:1"):
        with pytest.raises(DeploymentRefused, match="registry.fly.io/cloudctl-team:, registry.example.com/ours/"):
            start_deployment(image)
    assert not Deployment.objects.exists()
    assert start_deployment("registry.example.com/ours/team:v2").image == "registry.example.com/ours/team:v2"
