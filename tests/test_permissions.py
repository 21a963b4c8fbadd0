"""Staff is not an authorization: every dashboard view, JSON endpoint, admin action and service checks a
permission, granted through the groups that migration 0007 ships; deploys accept only allowed images."""

import re

import pytest
from django.contrib.auth.models import Group
from django.urls import URLPattern, get_resolver
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from backups.models import Restore
from console import urls as dashboard_urls
from deploys.models import Deployment
from instances.models import TeamAction
from teams.models import Team
from teams.tokens import team_token, verify_team_token

from .staff import PASSWORD, force_staff_login

pytestmark = pytest.mark.django_db


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
    force_staff_login(client, staff)
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
    force_staff_login(client, staff)
    page = client.get("/admin/teams/team/")
    assert page.status_code == 200 and "acme" in page.content.decode()
    assert 'name="action"' not in page.content.decode()  # no action selector at all
    old_token = team_token(team)
    for action in ("disable", "enable", "rotate_tokens", "delete_selected"):
        client.post("/admin/teams/team/", {"action": action, "_selected_action": [team.pk]})
    team.refresh_from_db()
    assert team.status == Team.Status.ACTIVE and verify_team_token(old_token) == team


def test_an_image_outside_the_allowed_prefixes_is_refused_by_the_service(settings, make_team):
    from deploys.plan import DeploymentRefused
    from deploys.services import start_deployment

    settings.ALLOWED_IMAGE_PREFIXES = ["registry.fly.io/cloudctl-team:", "registry.example.com/ours/"]
    make_team("acme")
    for image in ("docker.io/evil:1", "registry.fly.io/cloudctl-team-evil:1", "registry.example.com/oursx/a:1"):
        with pytest.raises(DeploymentRefused, match="registry.fly.io/cloudctl-team:, registry.example.com/ours/"):
            start_deployment(image, actor="test")
    assert not Deployment.objects.exists()
    allowed = "registry.example.com/ours/team:v2"
    assert start_deployment(allowed, actor="test").image == allowed


# --- each group can do exactly its set -------------------------------------------------------------------

# The groups' sets, as README documents them (the specification; teams.permissions.GROUPS implements it).
VIEW, ADD, OPERATE, ROTATE, DESTROY, DEPLOY = "view", "add team", "operate", "rotate token", "destroy", "deploy"
RESTORE, DRILL = "restore", "drill"
GROUP_CAN = {
    "Fleet viewer": {VIEW},
    "Fleet operator": {VIEW, ADD, OPERATE, ROTATE, DRILL},
    "Fleet deployer": {VIEW, DEPLOY},
    "Fleet administrator": {VIEW, ADD, OPERATE, ROTATE, DESTROY, DEPLOY, RESTORE, DRILL},
}


def a_restore(team: Team) -> Restore:
    return Restore.objects.create(team=team, database="data.db", target_txid=3, target_time=timezone.now(),
                                  requested_by="test")


def every_request(team: Team, deployment: Deployment) -> list[tuple[str, str, dict, str]]:
    """(method, URL, data, what it needs) for every page, JSON endpoint and action of the dashboard."""
    team_url = f"/dashboard/teams/{team.slug}/"
    restore = Restore.objects.filter(team=team).first() or a_restore(team)
    return [
        *(("get", url, {}, VIEW) for url in (
            "/dashboard/", "/dashboard/teams/", team_url, f"{team_url}status.json", "/dashboard/deployments/",
            f"/dashboard/deployments/{deployment.pk}/", f"/dashboard/deployments/{deployment.pk}/status.json")),
        ("get", "/dashboard/create/", {}, ADD),
        ("post", "/dashboard/create/", {"slug": "newcomer", "region": "ord"}, ADD),
        *(("post", f"{team_url}actions/{kind}/", {}, OPERATE) for kind in ("provision", "start", "stop", "restart")),
        ("post", f"{team_url}rotate-token/", {}, ROTATE),
        ("post", f"{team_url}destroy/", {"confirm": team.slug}, DESTROY),
        ("post", f"/dashboard/deployments/{deployment.pk}/resume/", {}, DEPLOY),
        ("post", f"{team_url}redeploy/", {"image": "v3"}, DEPLOY),
        ("post", "/dashboard/deployments/", {"image": "v2", "canary": 0, "concurrency": 1, "max_failures": 0}, DEPLOY),
        ("get", f"{team_url}restores/{restore.pk}/", {}, RESTORE),  # the preview: the team's rows
        ("post", f"{team_url}restores/", {"latest": "on"}, RESTORE),
        *(("post", f"{team_url}restores/{restore.pk}/{change}/", {}, RESTORE)
          for change in ("confirm-swap", "swap-back", "cancel")),
        ("post", f"{team_url}drill/", {}, DRILL),
    ]


@pytest.fixture
def member(django_user_model):
    """A staff user in one of the shipped groups."""
    from teams.permissions import ensure_groups

    ensure_groups()  # an earlier transactional test's flush empties the table the migration filled

    def make(group: str):
        user = django_user_model.objects.create_user(group.lower().replace(" ", "-"), password=PASSWORD,
                                                     is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        return user

    return make


@pytest.mark.parametrize("group", GROUP_CAN)
def test_each_group_can_do_exactly_its_set(client, member, make_team, group):
    team = make_team("acme")
    deployment = Deployment.objects.create(image="v1", canary=0, concurrency=1, max_failures=0, is_open=None,
                                           state=Deployment.State.SUCCEEDED)
    old_token = team_token(team)
    force_staff_login(client, member(group))
    for method, url, data, needs in every_request(team, deployment):
        status = getattr(client, method)(url, data).status_code
        allowed = needs in GROUP_CAN[group]
        assert (status != 403) == allowed, (group, method, url, status)
        assert status < 500, (group, method, url, status)
    team.refresh_from_db()
    actions = set(TeamAction.objects.values_list("kind", flat=True))
    # Each allowed action did its work; each refused one left no trace.
    assert ({"provision", "start", "stop", "restart"} <= actions) == (OPERATE in GROUP_CAN[group])
    assert ("destroy" in actions) == (DESTROY in GROUP_CAN[group])
    assert Team.objects.filter(slug="newcomer").exists() == (ADD in GROUP_CAN[group])
    assert (team.token_generation == 2) == (ROTATE in GROUP_CAN[group])
    if ROTATE not in GROUP_CAN[group]:
        assert verify_team_token(old_token) == team
    assert (Deployment.objects.count() == 2) == (DEPLOY in GROUP_CAN[group])  # the redeploy's
    assert (Restore.objects.get().state == Restore.State.CANCELLED) == (RESTORE in GROUP_CAN[group])
    drills = DBTaskResult.objects.filter(task_path="backups.tasks.drill_team_task")
    assert drills.exists() == (DRILL in GROUP_CAN[group])


@pytest.mark.parametrize("group", GROUP_CAN)
def test_a_group_is_shown_only_the_buttons_it_may_use(client, member, make_team, group):
    team = make_team("acme")
    deployment = Deployment.objects.create(image="v1", canary=0, concurrency=1, max_failures=0)
    force_staff_login(client, member(group))
    can = GROUP_CAN[group]
    team_page = client.get(f"/dashboard/teams/{team.slug}/").content.decode()
    deployments_page = client.get("/dashboard/deployments/").content.decode()
    deployment_page = client.get(f"/dashboard/deployments/{deployment.pk}/").content.decode()
    restore = a_restore(team)
    backups_page = client.get(f"/dashboard/teams/{team.slug}/backups/").content.decode()
    shown = {
        OPERATE: [f'id="action-{kind}"' in team_page for kind in ("provision", "start", "stop", "restart")],
        ROTATE: ['id="action-rotate-token"' in team_page],
        DESTROY: ['id="action-destroy"' in team_page, 'id="destroy-form"' in team_page],
        DEPLOY: ['id="action-redeploy"' in team_page, 'id="deployment-form"' in deployments_page,
                 'id="deployment-resume"' in deployment_page],
        ADD: ['href="/dashboard/create/"' in page for page in (team_page, deployments_page, deployment_page)],
        RESTORE: ['id="restore-request-form"' in backups_page, f'id="restore-{restore.pk}-cancel"' in backups_page],
        DRILL: ['id="action-drill"' in team_page],
    }
    for what, flags in shown.items():
        assert flags == [what in can] * len(flags), (group, what, flags)
    assert 'id="team-list"' in client.get("/dashboard/teams/").content.decode()


ADMIN_ACTIONS = {"rotate_tokens": ROTATE, "disable": OPERATE, "enable": OPERATE}


@pytest.mark.parametrize("group", GROUP_CAN)
def test_the_admin_offers_and_runs_only_the_actions_a_group_may_use(client, member, make_team, group):
    team = make_team("acme")
    old_token = team_token(team)
    force_staff_login(client, member(group))
    page = client.get("/admin/teams/team/")
    assert page.status_code == 200
    offered = {name for name in ADMIN_ACTIONS if f'value="{name}"' in page.content.decode()}
    # Disabling and enabling are changes to the team: the groups that operate teams may make them.
    assert offered == {name for name, needs in ADMIN_ACTIONS.items() if needs in GROUP_CAN[group]}, group
    assert 'value="delete_selected"' not in page.content.decode()  # no group deletes teams
    audit = client.get("/admin/credentials/credentialevent/")  # every group reads the audit trail, read-only
    assert audit.status_code == 200 and 'name="action"' not in audit.content.decode()
    client.post("/admin/teams/team/", {"action": "disable", "_selected_action": [team.pk]})
    client.post("/admin/teams/team/", {"action": "rotate_tokens", "_selected_action": [team.pk]})
    team.refresh_from_db()
    assert (team.status == Team.Status.DISABLED) == (OPERATE in GROUP_CAN[group])
    assert (team.token_generation == 2) == (ROTATE in GROUP_CAN[group])
    if ROTATE not in GROUP_CAN[group]:
        assert verify_team_token(old_token) == team


# --- the services refuse a user without the permission -----------------------------------------------------

def test_the_services_refuse_a_user_without_the_permission_and_trust_a_process(staff, make_team):
    from django.core.exceptions import PermissionDenied

    from deploys.services import queue_deployment, queue_resume
    from instances import services
    from teams.services import set_team_status

    team = make_team("acme")
    deployment = Deployment.objects.create(image="v1", canary=0, concurrency=1, max_failures=0)
    grant(staff, "teams.view_team", "teams.operate_instance")
    refused = [
        lambda actor: services.request_action(team, "destroy", actor=actor),
        lambda actor: services.rotate_token_and_restart(team, actor=actor),
        lambda actor: services.create_team_and_provision("newcomer", actor=actor),
        lambda actor: set_team_status(team, Team.Status.DISABLED, actor=actor),
        lambda actor: queue_resume(deployment, actor=actor),
        lambda actor: queue_deployment("v2", slugs=[team.slug], actor=actor),
    ]
    for call in refused:
        with pytest.raises(PermissionDenied):
            call(staff)
    assert not TeamAction.objects.exists() and Deployment.objects.count() == 1
    assert services.request_action(team, "stop", actor=staff).requested_by == "permissionless"
    for call in refused[:4]:  # a process (a command, the worker) is its shell operator: not restricted
        call("manage.py")
    team.refresh_from_db()
    assert team.token_generation == 2 and team.status == Team.Status.DISABLED
    assert Team.objects.filter(slug="newcomer").exists()


def test_every_action_kind_needs_a_permission_every_group_exists_in_the_database():
    from django.contrib.auth.models import Permission

    from instances.actions import ACTIONS
    from teams.permissions import GROUPS, ensure_groups

    assert sorted(action.kind for action in ACTIONS) == sorted(TeamAction.Kind)  # each once
    ensure_groups()
    for permission in {*(action.permission for action in ACTIONS),
                       *(name for names in GROUPS.values() for name in names)}:
        app_label, codename = permission.split(".")
        assert Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists()


# --- images only from CLOUDCTL_ALLOWED_IMAGE_PREFIXES ---------------------------------------------------------

ALLOWED = "registry.fly.io/cloudctl-team:"
EVIL = "docker.io/evil/miner:1"


def test_the_deploy_command_refuses_an_image_outside_the_prefixes(settings, make_team):
    from django.core.management import CommandError, call_command

    settings.ALLOWED_IMAGE_PREFIXES = [ALLOWED]
    make_team("acme")
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(CommandError, match=f"image {EVIL} is not allowed: it must start with {ALLOWED} "):
            call_command("deploy", "--image", EVIL, "--all", *dry_run)
    assert not Deployment.objects.exists()


def test_the_dashboard_and_redeploy_refuse_an_image_outside_the_prefixes(client, member, settings, make_team):
    settings.ALLOWED_IMAGE_PREFIXES = [ALLOWED, "registry.example.com/ours/"]
    team = make_team("acme")
    force_staff_login(client, member("Fleet deployer"))
    page = client.get("/dashboard/deployments/").content.decode()
    assert f"<code>{ALLOWED}</code>, <code>registry.example.com/ours/</code>" in page  # said before asking
    response = client.post("/dashboard/deployments/", {"image": EVIL, "canary": 0, "concurrency": 1,
                                                       "max_failures": 0})
    assert response.status_code == 400
    assert response.context["form"].errors["image"] == [
        f"image {EVIL} is not allowed: it must start with {ALLOWED}, registry.example.com/ours/ "
        "(CLOUDCTL_ALLOWED_IMAGE_PREFIXES)"]
    response = client.post(f"/dashboard/teams/{team.slug}/redeploy/", {"image": EVIL}, follow=True)
    assert f"Image {EVIL} is not allowed" in response.content.decode()
    assert not Deployment.objects.exists()
    client.post(f"/dashboard/teams/{team.slug}/redeploy/", {"image": ALLOWED + "v2"})
    assert Deployment.objects.get().image == ALLOWED + "v2"


def test_unset_fly_accepts_only_the_team_repository_and_the_local_backend_any_label(settings, make_team):
    from deploys.plan import DeploymentRefused
    from deploys.services import start_deployment

    make_team("acme")
    settings.ALLOWED_IMAGE_PREFIXES = []
    settings.MACHINE_BACKEND = "instances.backends.fly.FlyBackend"
    settings.FLY_APP_PREFIX = "cloudctl"
    for image in (EVIL, "registry.fly.io/cloudctl-team-evil:1", "registry.fly.io/other-team:1", "v2"):
        with pytest.raises(DeploymentRefused, match="must start with registry.fly.io/cloudctl-team: "):
            start_deployment(image, actor="test")
    assert not Deployment.objects.exists()
    settings.MACHINE_BACKEND = "instances.backends.local.LocalBackend"
    assert start_deployment("v2", actor="test").image == "v2"  # a version label of this checkout's code


def test_the_prefixes_syntax_is_checked_and_check_deploy_asks_for_them_on_fly(settings):
    from django.core.checks import run_checks

    def ids(deploy: bool = False) -> set[str]:
        return {message.id for message in run_checks(include_deployment_checks=deploy)
                if message.id.startswith("teams.")}

    settings.ALLOWED_IMAGE_PREFIXES = [ALLOWED, "registry.example.com/ours/", "registry.example.com/x@"]
    assert ids() == set()
    settings.ALLOWED_IMAGE_PREFIXES = [ALLOWED, " registry.example.com/ours/"]
    assert ids() == {"teams.E001"}  # a space after the comma
    settings.ALLOWED_IMAGE_PREFIXES = ["registry.fly.io/cloudctl-team"]  # would accept cloudctl-team-evil
    assert ids() == {"teams.E002"}
    settings.ALLOWED_IMAGE_PREFIXES = []
    assert ids(deploy=True) == set()  # the local backend: images are labels
    settings.MACHINE_BACKEND = "instances.backends.fly.FlyBackend"
    assert ids(deploy=True) == {"teams.W001"} and ids() == set()
    settings.ALLOWED_IMAGE_PREFIXES = [ALLOWED]
    assert ids(deploy=True) == set()


# --- the migration that ships the groups ---------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("database", ["fresh", "migrated from 0006"])
def test_the_groups_migration_works_on_a_fresh_database_and_on_one_migrated_before(database):
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("teams", "0006_deployments")])
    assert not Group.objects.filter(name__startswith="Fleet ").exists()
    if database == "fresh":  # nothing post_migrate creates exists yet: no content type, no permission
        ContentType.objects.filter(app_label__in=["teams", "credentials"]).delete()
    else:  # the default permissions exist, the new ones do not
        Permission.objects.filter(codename__in=["operate_instance", "rotate_token", "destroy_instance",
                                                "deploy_image"]).delete()
    ContentType.objects.clear_cache()
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()
    granted = {group.name: {f"{permission.content_type.app_label}.{permission.codename}"
                            for permission in group.permissions.all()}
               for group in Group.objects.filter(name__startswith="Fleet ")}
    assert granted == {
        "Fleet viewer": {"teams.view_team", "credentials.view_credentialevent"},
        "Fleet operator": {"teams.view_team", "credentials.view_credentialevent", "teams.add_team",
                           "teams.change_team", "teams.operate_instance", "teams.rotate_token", "backups.run_drill"},
        "Fleet deployer": {"teams.view_team", "credentials.view_credentialevent", "teams.deploy_image"},
        "Fleet administrator": {"teams.view_team", "credentials.view_credentialevent", "teams.add_team",
                                "teams.change_team", "teams.operate_instance", "teams.rotate_token",
                                "teams.destroy_instance", "teams.deploy_image", "backups.run_drill",
                                "backups.restore_database"},
    }
