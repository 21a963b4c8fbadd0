"""The team timeline: typed kinds, one writer (`teams.timeline.record`), who acted on every event, and the
migration that typed the rows written before."""

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from instances import lifecycle
from instances.actions import ACTIONS
from instances.backends import ObservedState
from instances.machines import build_backend
from instances.models import Instance, TeamAction
from instances.provisioning import provision
from instances.reconcile import CRASH_LOOP_LIMIT
from instances.supervision import supervise
from teams import timeline
from teams.models import TeamEvent

from .test_provisioning import BACKEND
from .test_signals import path_of, running, urls_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def backend(settings):
    from instances.machines import get_backend

    settings.MACHINE_BACKEND = BACKEND
    get_backend.cache_clear()
    yield get_backend(BACKEND)
    get_backend.cache_clear()


def test_every_step_of_every_backend_and_every_action_has_a_kind():
    steps = [step.name for backend in (build_backend("instances.backends.local.LocalBackend"),
                                       build_backend("instances.backends.fly.FlyBackend", client=object()))
             for step in backend.provisioning_steps()]
    assert {timeline.step_kind(name).value for name in steps} == {f"step:{name}" for name in steps}
    assert {action.requested_event.value for action in ACTIONS} == {f"action:{kind}" for kind in TeamAction.Kind.values}


def test_the_writer_refuses_an_unknown_kind_and_an_event_without_its_actor(make_team):
    team = make_team()
    with pytest.raises(ValueError):
        timeline.record(team, "rebooted", "made up", actor="test")
    with pytest.raises(ValueError):
        timeline.record(team, timeline.Kind.STOPPED, "nobody did it", actor="")
    assert not TeamEvent.objects.exists()


def test_the_writer_redacts_the_message_and_keeps_data_and_actor(make_team):
    from teams.tokens import signal_value

    team = make_team()
    leak = f"GET /private/v1/teams/{team.pk}/signals/backup/{signal_value(team)}"
    event = timeline.record(team, timeline.Kind.CRASHED, leak, actor="supervisor", data={"observed": "crashed"},
                            is_error=True)
    event.refresh_from_db()
    assert signal_value(team) not in event.message
    assert (event.kind, event.actor, event.data, event.is_error) == (
        "crashed", "supervisor", {"observed": "crashed"}, True)


def test_provisioning_records_each_step_by_its_actor_with_the_step_in_data(backend, make_team):
    team = make_team()
    provision(team, actor="manage.py provision")
    events = list(TeamEvent.objects.filter(team=team).order_by("id"))
    assert {event.actor for event in events} == {"manage.py provision"}
    assert [event.data.get("step") for event in events if event.kind.startswith("step:")] == [
        "volume", "machine", "healthy"]


def test_an_operator_action_names_the_user_who_asked_on_every_event_it_causes(staff_client, backend, make_team,
                                                                              django_capture_on_commit_callbacks):
    team = make_team("acme")
    provision(team, actor="test")
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post("/dashboard/teams/acme/actions/restart/")
    lifecycle.run_action(TeamAction.objects.get().pk)
    caused = TeamEvent.objects.filter(team=team, kind__in=["action:restart", "restarting", "running"]).order_by("id")
    assert [(event.kind, event.actor) for event in caused] == [
        ("running", "test"), ("action:restart", "operator"), ("restarting", "operator"), ("running", "operator")]
    status = staff_client.get("/dashboard/teams/acme/status.json").json()
    assert {(entry["kind"], entry["actor"]) for entry in status["timeline"]} >= {
        ("action:restart", "operator"), ("restarting", "operator"), ("running", "operator")}
    assert "by operator" in staff_client.get("/dashboard/teams/acme/").content.decode()


def test_a_signal_from_the_instance_is_recorded_as_the_instance(client, make_team):
    team = make_team()
    running(team)
    report = {"started_at": timezone.now().timestamp() - 120, "idle_timeout": 900}
    response = client.post(path_of(urls_of(team)["shutdown_url"]), data=json.dumps(report),
                           content_type="application/json")
    assert response.status_code == 200
    event = TeamEvent.objects.get(team=team, kind=timeline.Kind.SCALED_TO_ZERO)
    assert (event.actor, event.data) == ("instance", {"reason": "idle for 900s"})


def test_a_crash_loop_is_counted_from_the_kind_whatever_the_messages_say(backend, make_team):
    team = make_team()
    provision(team, actor="test")
    for _ in range(CRASH_LOOP_LIMIT - 1):
        timeline.record(team, timeline.Kind.CRASHED, "worded in any way", actor="test", is_error=True)
    # A message that reads like a crash is no crash: only the kind counts.
    timeline.record(team, timeline.Kind.EXITED, "instance crashed; last log lines:", actor="test")
    backend.observed = ObservedState.CRASHED
    assert supervise(BACKEND, actor="supervisor") == [f"{team.slug}: crash loop, left failed"]
    loop = TeamEvent.objects.get(team=team, kind=timeline.Kind.CRASH_LOOP)
    assert (loop.actor, loop.data["crashes"]) == ("supervisor", CRASH_LOOP_LIMIT)
    assert Instance.objects.get(team=team).state == Instance.State.FAILED


def test_a_deployment_run_by_the_worker_names_who_started_it(fly, make_team, transactional_db):
    from deploys.services import start_deployment
    from deploys.tasks import run_deployment_task
    from instances.fleet import provision_fleet

    team = make_team()
    assert provision_fleet([team], actor="test").failed == {}
    deployment = start_deployment("registry.fly.io/cloudctl-team:v2", actor="alice", slugs=[team.slug])
    assert run_deployment_task.call(deployment.pk) == "succeeded"
    deployed = TeamEvent.objects.get(team=team, kind=timeline.Kind.DEPLOYED)
    assert (deployed.actor, deployed.data["deployment"], deployed.data["step"]) == ("alice", deployment.pk, "updated")


@pytest.mark.django_db(transaction=True)
def test_the_migration_types_the_rows_written_before(make_team):
    team = make_team()
    old_rows = [
        ("step:machine", "machine ready"),
        ("crashed", "instance crashed; last log lines:\nboom"),
        ("action:stop", "Stop requested by alice"),
        ("token_rotated", "token rotated to generation 2 by manage.py rotate by hand"),
        ("action:restart", "Restart requested by system"),
        ("step:warp", "warp ready"),  # a step no backend has any more
        ("rebooted", "a kind no code writes"),
    ]
    executor = MigrationExecutor(connection)
    executor.migrate([("teams", "0010_deployment_tenant_fault")])
    try:
        with connection.cursor() as cursor:
            for kind, message in old_rows:
                cursor.execute("INSERT INTO teams_teamevent (team_id, created_at, kind, message, is_error) "
                               "VALUES (%s, %s, %s, %s, %s)", [team.pk, timezone.now(), kind, message, False])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    typed = [(event.kind, event.actor, event.data) for event in TeamEvent.objects.order_by("id")]
    assert typed == [
        ("step:machine", "system", {"step": "machine"}),
        ("crashed", "system", {}),
        ("action:stop", "alice", {}),
        ("token_rotated", "manage.py rotate by hand", {}),
        ("action:restart", "system", {}),
        ("other", "system", {"legacy_kind": "step:warp"}),
        ("other", "system", {"legacy_kind": "rebooted"}),
    ]
    assert [event.message for event in TeamEvent.objects.order_by("id")] == [message for _, message in old_rows]
