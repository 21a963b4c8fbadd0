"""One registry (`instances.actions.ACTIONS`) drives the operator actions everywhere: the service that queues and
runs them, `manage.py instance`, the team page's buttons and the admin's actions."""

import io

import pytest
from django.core.management import call_command
from django.utils.module_loading import import_string

from instances import actions, lifecycle, services
from instances.models import Instance, TeamAction
from teams.models import TeamEvent
from instances.management.commands.instance import Command as InstanceCommand

from .staff import PASSWORD, force_staff_login

pytestmark = pytest.mark.django_db

KINDS = [action.kind.value for action in actions.ACTIONS]


def staff_with(django_user_model, *permissions: str):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("someone", password=PASSWORD, is_staff=True)
    user.user_permissions.add(*(Permission.objects.get(content_type__app_label=label, codename=codename)
                                for label, codename in (name.split(".") for name in permissions)))
    return user


@pytest.fixture
def recorded(monkeypatch):
    """Every registered action's service replaced by one that records its call (the services themselves are
    tested elsewhere)."""
    calls = []
    for action in actions.ACTIONS:
        monkeypatch.setattr(action.run, lambda team, *, actor, kind=action.kind: calls.append((kind, team, actor)))
    return calls


def test_every_action_names_a_service_that_exists():
    for action in actions.ACTIONS:
        assert callable(import_string(action.run)), action.run


@pytest.mark.parametrize("kind", KINDS)
def test_a_registered_action_is_a_command_choice_a_button_for_whoever_may_and_runs_through_run_action(
        client, django_user_model, make_team, recorded, django_capture_on_commit_callbacks, kind):
    action = actions.action_for(kind)
    team = make_team("acme")
    parser = InstanceCommand().create_parser("manage.py", "instance")
    assert kind in next(argument.choices for argument in parser._actions if argument.dest == "action")
    assert action.help in parser.description

    force_staff_login(client, staff_with(django_user_model, "teams.view_team", action.permission))
    page = client.get(f"/dashboard/teams/{team.slug}/").content.decode()
    assert f'id="action-{kind}"' in page and action.label in page
    data = {"confirm": team.slug} if action.confirm_text else {}
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(f"/dashboard/teams/{team.slug}/actions/{kind}/", data)
    assert response.status_code == 302
    queued = TeamAction.objects.get(team=team)
    assert (queued.kind, queued.status, queued.requested_by) == (kind, "queued", "someone")
    assert TeamEvent.objects.filter(team=team, kind=action.requested_event).exists()
    assert recorded == []  # queued, not run in the request

    assert lifecycle.run_action(queued.pk).status == TeamAction.Status.SUCCEEDED
    assert recorded == [(kind, team, "someone")]


@pytest.mark.parametrize("kind", KINDS)
def test_without_its_permission_no_button_and_a_403(client, django_user_model, make_team, kind):
    action = actions.action_for(kind)
    team = make_team("acme")
    others = {other.permission for other in actions.ACTIONS} - {action.permission}
    force_staff_login(client, staff_with(django_user_model, "teams.view_team", *others))
    page = client.get(f"/dashboard/teams/{team.slug}/").content.decode()
    assert f'id="action-{kind}"' not in page
    assert client.post(f"/dashboard/teams/{team.slug}/actions/{kind}/", {"confirm": team.slug}).status_code == 403
    admin_page = client.get("/admin/teams/team/").content.decode()
    assert f'value="request_{kind}"' not in admin_page
    assert not TeamAction.objects.exists()


def test_an_action_asking_for_the_slug_typed_needs_it_everywhere(client, django_user_model, make_team, recorded):
    action = next(action for action in actions.ACTIONS if action.confirm_text)
    team = make_team("acme")
    with pytest.raises(Exception, match=f"confirm with --confirm {team.slug}"):
        call_command("instance", team.slug, action.kind, stdout=io.StringIO())
    force_staff_login(client, staff_with(django_user_model, "teams.view_team", action.permission))
    client.post(f"/dashboard/teams/{team.slug}/actions/{action.kind}/", {"confirm": "not-it"})
    assert not TeamAction.objects.exists() and recorded == []
    # Never in bulk: the admin's list does not offer it.
    assert f'value="request_{action.kind}"' not in client.get("/admin/teams/team/").content.decode()
    call_command("instance", team.slug, action.kind, "--confirm", team.slug, stdout=io.StringIO())
    assert recorded == [(action.kind, team, "manage.py instance")]


def test_the_command_runs_an_action_now_and_shows_the_instance(make_team, recorded):
    team = make_team("acme")
    Instance.objects.create(team=team, backend="instances.backends.local.LocalBackend", state=Instance.State.RUNNING)
    for action in actions.ACTIONS:
        out = io.StringIO()
        call_command("instance", team.slug, action.kind, "--confirm", team.slug, stdout=out)
        assert out.getvalue().startswith("acme: running")
    assert recorded == [(action.kind, team, "manage.py instance") for action in actions.ACTIONS]
    assert not TeamAction.objects.exists()  # done here, not queued


def test_the_admin_offers_each_action_without_a_typed_confirmation_and_queues_it(
        client, django_user_model, make_team, recorded):
    teams = [make_team("acme"), make_team("globex")]
    force_staff_login(client, staff_with(django_user_model, "teams.view_team",
                                         *{action.permission for action in actions.ACTIONS}))
    page = client.get("/admin/teams/team/").content.decode()
    bulk = [action for action in actions.ACTIONS if not action.confirm_text]
    assert {action.kind for action in bulk if f'value="request_{action.kind}"' in page} == {a.kind for a in bulk}
    for action in bulk:
        client.post("/admin/teams/team/", {"action": f"request_{action.kind}",
                                           "_selected_action": [team.pk for team in teams]})
    assert sorted(TeamAction.objects.values_list("kind", "team__slug")) == sorted(
        (action.kind, team.slug) for action in bulk for team in teams)


def test_an_entry_removed_from_the_registry_is_gone_from_every_consumer(
        client, django_user_model, make_team, monkeypatch):
    """Nothing lists the actions but the registry: without `stop`, no page, command or service knows it."""
    from django.core.management.base import CommandError

    monkeypatch.setattr(actions, "ACTIONS", tuple(action for action in actions.ACTIONS if action.kind != "stop"))
    team = make_team("acme")
    force_staff_login(client, staff_with(django_user_model, "teams.view_team", "teams.operate_instance"))
    assert 'id="action-restart"' in client.get(f"/dashboard/teams/{team.slug}/").content.decode()
    assert 'id="action-stop"' not in client.get(f"/dashboard/teams/{team.slug}/").content.decode()
    assert 'value="request_stop"' not in client.get("/admin/teams/team/").content.decode()
    client.post(f"/dashboard/teams/{team.slug}/actions/stop/")
    with pytest.raises(ValueError, match="no action 'stop'"):
        services.request_action(team, "stop", actor="test")
    with pytest.raises(CommandError, match="invalid choice: 'stop'"):
        call_command("instance", team.slug, "stop")
    assert not TeamAction.objects.exists()


def test_the_command_reports_an_action_that_fails_as_a_clear_error(make_team, monkeypatch):
    from django.core.management.base import CommandError

    from instances.backends import BackendError

    def unreachable(team, *, actor):
        raise BackendError("the backend is unreachable")

    team = make_team("acme")
    monkeypatch.setattr(actions.action_for("stop").run, unreachable)
    with pytest.raises(CommandError, match="^stop failed: the backend is unreachable$"):
        call_command("instance", team.slug, "stop", stdout=io.StringIO())
